"""Reading a job's rows back, and checking them the same way in both modes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from segbatch.schema import store
from segbatch.schema.tables import DetectionRow, Image


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
    """Box inside the image, polygons inside the box, area close to the polygons'."""
    width, height = size_wh
    assert 0 <= detection.x1 < detection.x2 <= width
    assert 0 <= detection.y1 < detection.y2 <= height
    assert 0.0 < detection.score <= 1.0
    assert detection.polygons, "a detection without a polygon"

    canvas = np.zeros((height, width), np.uint8)
    for ring in detection.polygons:
        xy = np.asarray(ring["xy"], np.float64)
        assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 3
        assert xy[:, 0].min() >= detection.x1 - 1.5
        assert xy[:, 0].max() <= detection.x2 + 1.5
        assert xy[:, 1].min() >= detection.y1 - 1.5
        assert xy[:, 1].max() <= detection.y2 + 1.5
        cv2.fillPoly(canvas, [np.round(xy).astype(np.int32)], 0 if ring["hole"] else 1)
    drawn = int(canvas.sum())
    assert abs(drawn - detection.mask_area) <= 0.15 * detection.mask_area + 20


def detection_signature(detection: DetectionRow) -> tuple[Any, ...]:
    """What two runs of the same model on the same image must agree on."""
    return (
        detection.class_id,
        round(detection.score, 3),
        tuple(
            round(v) for v in (detection.x1, detection.y1, detection.x2, detection.y2)
        ),
        detection.mask_area,
    )
