"""The batch pipeline: every URI gets its own outcome, and memory stays bounded."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from segbatch.config import Settings
from segbatch.errors import InferenceError
from segbatch.workers.model import SegmentationModel
from segbatch.workers.pipeline import BatchProcessor
from tests.support.cases import CASES, CASES_DIR
from tests.test_model import fake_model


def write_png(path: Path, height: int, width: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))
    return f"file://{path}"


@pytest.fixture
def processor(tmp_path):
    model = SegmentationModel.load(fake_model(tmp_path / "models"))
    processor = BatchProcessor(model, Settings(fetch_concurrency=3), None)
    yield processor
    processor.close()


def test_every_uri_gets_its_outcome_in_order_and_bad_ones_fail_alone(
    processor, tmp_path
):
    good = [write_png(tmp_path / f"img {i}.png", 60 + i, 90) for i in range(4)]
    cases = [f"file://{CASES_DIR / case.file}" for case in CASES]
    missing = f"file://{tmp_path / 'gone #1.png'}"
    uris = [good[0], *cases, missing, *good[1:], good[0]]

    results = processor.process(uris)

    assert [r.uri for r in results] == list(dict.fromkeys(uris))
    by_uri = {r.uri: r for r in results}
    for uri in good:
        assert by_uri[uri].ok and len(by_uri[uri].detections) == 1
        assert set(by_uri[uri].timings_ms) == {"fetch", "decode", "segment"}
    for case, uri in zip(CASES, cases, strict=True):
        assert by_uri[uri].failure_kind == case.failure_kind, by_uri[
            uri
        ].failure_message
    assert by_uri[missing].failure_kind == "not_found"
    assert "gone #1.png" in by_uri[missing].failure_message


def test_no_more_images_than_the_fetch_concurrency_are_loading_at_once(
    processor, tmp_path, monkeypatch
):
    uris = [write_png(tmp_path / f"{i}.png", 50, 50) for i in range(12)]
    loading = 0
    most = 0
    lock = threading.Lock()
    load = BatchProcessor._load

    def counting_load(self, uri):
        nonlocal loading, most
        with lock:
            loading += 1
            most = max(most, loading)
        try:
            return load(self, uri)
        finally:
            with lock:
                loading -= 1

    monkeypatch.setattr(BatchProcessor, "_load", counting_load)
    results = processor.process(uris)

    assert all(r.ok for r in results)
    assert 1 <= most <= processor.settings.fetch_concurrency


def test_an_inference_failure_fails_the_decoded_images_and_keeps_decode_failures(
    processor, tmp_path, monkeypatch
):
    good = [write_png(tmp_path / f"{i}.png", 40, 40) for i in range(3)]
    empty = f"file://{CASES_DIR / 'empty.jpg'}"

    def broken(images, **_):
        next(iter(images))
        raise InferenceError("the device went away")

    monkeypatch.setattr(processor.model, "segment", broken)
    results = processor.process([good[0], empty, *good[1:]])

    kinds = [r.failure_kind for r in results]
    assert kinds == ["inference", "empty", "inference", "inference"]
