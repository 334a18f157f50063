"""Reading a job's rows back, and checking them the same way in both modes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from segbatch.config import load_settings
from segbatch.models import registry
from segbatch.schema import store
from segbatch.schema.tables import DetectionRow, Image

MODEL_INPUT_PX = min(
    registry.resolve(load_settings().model, load_settings().models_dir).input_size_hw
)


@dataclass(frozen=True)
class StoredImage:
    uri: str
    state: str
    width: int | None
    height: int | None
    failure_kind: str | None
    failure_message: str | None
    detections: list[DetectionRow]


def images_of_job(
    sessions: sessionmaker[Session], job_id: str
) -> dict[str, StoredImage]:
    """Every image row the job last touched, by URI, with its detections."""
    with sessions() as session:
        rows = session.scalars(select(Image).where(Image.job_id == job_id)).all()
        found = {}
        for row in rows:
            detections = session.scalars(
                select(DetectionRow)
                .where(DetectionRow.image_id == row.id)
                .order_by(DetectionRow.score.desc())
            ).all()
            session.expunge_all()
            found[row.uri] = StoredImage(
                row.uri,
                row.state,
                row.width,
                row.height,
                row.failure_kind,
                row.failure_message,
                list(detections),
            )
        return found


def wait_for_job(sessions: sessionmaker[Session], job_id: str, timeout_s: float) -> Any:
    """Poll until no image of the job is queued; return its summary."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            summary = store.job_summary(session, job_id)
        if summary.done + summary.failed >= summary.queued:
            return summary
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} unfinished after {timeout_s} s: {summary}"
            )
        time.sleep(0.5)


def assert_detection_is_consistent(
    detection: DetectionRow, size_wh: tuple[int, int]
) -> None:
    """Box inside the image, polygons inside the box, area close to the polygons'.

    Masks are cut to the box at the model's input resolution, so a polygon may
    pass the box by up to one input pixel scaled to the image.
    """
    width, height = size_wh
    margin_px = max(width, height) / MODEL_INPUT_PX + 1.0
    assert 0 <= detection.x1 < detection.x2 <= width
    assert 0 <= detection.y1 < detection.y2 <= height
    assert 0.0 < detection.score <= 1.0
    assert detection.polygons, "a detection without a polygon"

    canvas = np.zeros((height, width), np.uint8)
    for ring in detection.polygons:
        xy = np.asarray(ring["xy"], np.float64)
        assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 3
        assert xy[:, 0].min() >= detection.x1 - margin_px
        assert xy[:, 0].max() <= detection.x2 + margin_px
        assert xy[:, 1].min() >= detection.y1 - margin_px
        assert xy[:, 1].max() <= detection.y2 + margin_px
        cv2.fillPoly(canvas, [np.round(xy).astype(np.int32)], 0 if ring["hole"] else 1)
    drawn = int(canvas.sum())
    assert abs(drawn - detection.mask_area) <= 0.15 * detection.mask_area + 20


def assert_same_detections(
    found: list[DetectionRow], expected: list[DetectionRow], where: str
) -> None:
    """Two runs of one model on one image agree, up to floating-point noise.

    Each expected detection is matched to the found one of its class with the
    highest box IoU; then scores agree within 1e-3, boxes within 1 px and mask
    areas within 2 %.
    """
    assert len(found) == len(expected), f"{where}: {len(found)} != {len(expected)}"
    unmatched = list(found)
    for theirs in expected:
        candidates = [d for d in unmatched if d.class_id == theirs.class_id]
        assert candidates, f"{where}: nothing matches {_box(theirs)}"
        ours = max(candidates, key=lambda d: _iou(_box(d), _box(theirs)))
        unmatched.remove(ours)
        assert abs(ours.score - theirs.score) <= 1e-3, where
        assert np.abs(_box(ours) - _box(theirs)).max() <= 1.0, where
        assert abs(ours.mask_area - theirs.mask_area) <= 0.02 * theirs.mask_area + 4


def _box(detection: DetectionRow) -> np.ndarray:
    return np.array([detection.x1, detection.y1, detection.x2, detection.y2])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0
