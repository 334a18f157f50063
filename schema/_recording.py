"""Recording a batch of results: image rows, their detections and job counters."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from segbatch import defaults
from segbatch.schema._rows import (
    JobDeltas,
    LockedImage,
    finish_drained_jobs,
    lock_images,
    name_uris,
    now_utc,
    transaction,
)
from segbatch.schema.tables import DetectionRow, Image, ImageState

if TYPE_CHECKING:
    # Only the types: the worker package imports this one at run time.
    from segbatch.workers.results import Detection, ImageResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedCounts:
    """What one call of ``record_results`` stored.

    ``done`` and ``failed`` count the results stored in that state, ``kept``
    the failures not stored because their image was already done (an earlier
    delivery succeeded), ``detections`` the detection rows written.
    """

    done: int = 0
    failed: int = 0
    kept: int = 0
    detections: int = 0


def record_results(
    session: Session,
    *,
    job_id: str,
    model_version_id: int,
    results: Sequence[ImageResult],
) -> RecordedCounts:
    """Store a batch of results in one transaction, which this function commits.

    Each image row becomes done or failed with its metadata, timings and one more
    attempt; its previous detections are replaced by the new ones. A failure never
    overwrites a done image. Recording the same results again leaves the same rows
    and counts. An image nobody queued is created for ``job_id``; a result is
    counted for the job that queued its image last. A job with no image left
    queued is marked finished.
    """
    latest = {result.uri: result for result in results}
    detection_rows = {uri: _detection_rows(result) for uri, result in latest.items()}
    uris = list(latest)
    if not uris:
        return RecordedCounts()

    failure = f"could not record results of job {job_id} for {name_uris(uris)}"
    with transaction(session, failure):
        rows = lock_images(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        deltas = JobDeltas()
        finished_at = now_utc()
        changes: list[dict[str, Any]] = []
        new_detections: list[dict[str, Any]] = []
        kept = 0
        for row in rows:
            result = latest[row.uri]
            new_state = ImageState.DONE if result.ok else ImageState.FAILED
            if new_state == ImageState.FAILED and row.state == ImageState.DONE:
                kept += 1
                continue
            _count_transition(deltas, row, new_state)
            changes.append(_image_changes(row, result, new_state, finished_at))
            new_detections.extend(
                {"image_id": row.id, **columns} for columns in detection_rows[row.uri]
            )

        if changes:
            session.execute(update(Image), changes)
            changed_ids = [change["id"] for change in changes]
            session.execute(
                delete(DetectionRow)
                .where(DetectionRow.image_id.in_(changed_ids))
                .execution_options(synchronize_session=False)
            )
        if new_detections:
            session.execute(insert(DetectionRow), new_detections)

        deltas.write(session)
        finish_drained_jobs(session, {job_id} | {row.job_id for row in rows})

    done = sum(change["state"] == ImageState.DONE for change in changes)
    counts = RecordedCounts(
        done=done,
        failed=len(changes) - done,
        kept=kept,
        detections=len(new_detections),
    )
    logger.debug("Job %s recorded %s.", job_id, counts)
    return counts


def _count_transition(deltas: JobDeltas, row: LockedImage, new_state: str) -> None:
    if row.inserted:
        deltas.queue(row.job_id)
    deltas.move(row.job_id, row.state, new_state)


def _image_changes(
    row: LockedImage, result: ImageResult, new_state: str, finished_at: datetime
) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": new_state,
        "etag": result.etag,
        "size_bytes": result.size_bytes,
        "width": result.width,
        "height": result.height,
        "failure_kind": result.failure_kind,
        "failure_message": result.failure_message,
        "timings_ms": {step: float(ms) for step, ms in result.timings_ms.items()},
        "attempts": row.attempts + 1,
        "finished_at": finished_at,
    }


def _detection_rows(result: ImageResult) -> list[dict[str, Any]]:
    """The detection columns of a result, checked before any statement runs."""
    if not result.ok:
        return []
    return [_detection_row(result.uri, detection) for detection in result.detections]


def _detection_row(uri: str, detection: Detection) -> dict[str, Any]:
    if len(detection.polygons) != len(detection.polygon_holes):
        raise ValueError(
            f"expected one hole flag per polygon in a detection of {uri!r}, got "
            f"{len(detection.polygons)} polygons and "
            f"{len(detection.polygon_holes)} flags"
        )

    x1, y1, x2, y2 = (float(value) for value in detection.box_xyxy)
    rings = zip(detection.polygons, detection.polygon_holes, strict=True)
    return {
        "class_id": int(detection.class_id),
        "class_name": detection.class_name,
        "score": float(detection.score),
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "polygons": [
            {"hole": bool(hole), "xy": _vertices(uri, ring)} for ring, hole in rings
        ],
        "mask_area": int(detection.mask_area_px),
    }


def _vertices(uri: str, ring: np.ndarray) -> list[list[float]]:
    xy = np.asarray(ring, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        raise ValueError(
            f"expected a polygon of finite (N, 2) xy vertices in a detection of "
            f"{uri!r}, got an array of shape {xy.shape}"
        )
    rounded: list[list[float]] = np.round(xy, defaults.POLYGON_DECIMALS).tolist()
    return rounded
