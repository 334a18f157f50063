"""The batch pipeline: every URI gets its own outcome, and memory stays bounded."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from segbatch import defaults
from segbatch.config import Settings
from segbatch.errors import InferenceError
from segbatch.s3 import make_s3_client
from segbatch.workers.model import SegmentationModel
from segbatch.workers.pipeline import BatchProcessor
from tests.support.cases import CASES, CASES_DIR, demo_images
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_image_the_store_cannot_serve_yet_is_fetched_again_once_it_is_back(
    processor, s3_client, s3_bucket, tmp_path
):
    from moto.server import ThreadedMotoServer

    key = "later/img #1.png"
    write_png(tmp_path / "img.png", 40, 60)
    s3_client.put_object(
        Bucket=s3_bucket, Key=key, Body=(tmp_path / "img.png").read_bytes()
    )
    port = free_port()
    # A second server on the same in-process store, listening only after a while.
    late_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    starting = threading.Timer(1.0, late_server.start)
    processor.s3_client = make_s3_client(
        Settings(), endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1
    )

    starting.start()
    try:
        (result,) = processor.process(
            [f"s3://{s3_bucket}/{key}"], storage_wait_s=30, first_pause_s=0.2
        )
    finally:
        starting.join()
        late_server.stop()

    assert result.ok, result.failure_message
    assert (result.width, result.height) == (60, 40)


def test_an_image_the_store_cannot_serve_within_the_wait_fails_as_unavailable(
    processor, s3_endpoint
):
    processor.s3_client = make_s3_client(
        Settings(), endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1
    )
    uri = "s3://photos/x #1.jpg"

    started_s = time.monotonic()
    (result,) = processor.process([uri], storage_wait_s=0.5, first_pause_s=0.1)

    assert time.monotonic() - started_s >= 0.5
    assert result.failure_kind == "storage_unavailable"
    assert uri in result.failure_message


def box_iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union


def test_class_agnostic_nms_leaves_no_two_detections_on_one_object(published_model):
    # At so low a confidence, NMS within each class leaves the same object found
    # under a second class on these images.
    model = SegmentationModel.load(published_model)
    processor = BatchProcessor(
        model, Settings(class_agnostic_nms=True, confidence=0.01), None
    )
    try:
        results = processor.process([path.as_uri() for path in demo_images()])
    finally:
        processor.close()

    assert all(result.ok and result.detections for result in results)
    for result in results:
        for index, first in enumerate(result.detections):
            for second in result.detections[index + 1 :]:
                overlap = box_iou(first.box_xyxy, second.box_xyxy)
                assert overlap <= defaults.IOU_THRESHOLD, (result.uri, first, second)
