"""Exactly-once bookkeeping, on PostgreSQL and SQLite."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter

import numpy as np
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from segbatch import defaults
from segbatch.errors import ChecksumMismatch, DatabaseError, JobNotFound
from segbatch.schema import (
    DetectionRow,
    Image,
    ImageState,
    JobState,
    add_skipped,
    create_job,
    ensure_model_version,
    finish_if_drained,
    job_summary,
    mark_queued,
    record_results,
    select_pending,
)
from segbatch.workers.results import Detection, ImageResult

SHA256 = "0" * 64


@pytest.fixture
def model_version_id(db_sessions) -> int:
    """A model version of its own, so that no other test's images share its rows."""
    with db_sessions() as session:
        return ensure_model_version(
            session,
            name=f"test-{uuid.uuid4().hex[:8]}",
            version="1",
            precision="int8",
            sha256=SHA256,
        )


@pytest.fixture
def job_id(db_sessions, model_version_id) -> str:
    with db_sessions() as session:
        return create_job(
            session, source="s3://bucket/", model_version_id=model_version_id
        )


def _uris(count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    return [f"s3://bucket/{prefix}/image-{index:04d}.jpg" for index in range(count)]


def _detection(index: int) -> Detection:
    outer = np.array([[10, 10], [60, 10], [60, 50], [10, 50]], np.float32) + index
    hole = np.array([[20.123, 20.456], [30.789, 20.0], [25.5, 30.25]], np.float32)
    return Detection(
        class_id=index % 3,
        class_name=f"class-{index % 3}",
        score=0.5 + index / 100,
        box_xyxy=(10.0 + index, 10.0 + index, 60.0 + index, 50.0 + index),
        polygons=[outer, hole],
        polygon_holes=[False, True],
        mask_area_px=2000 - index,
    )


def _done(uri: str, detections: int) -> ImageResult:
    return ImageResult(
        uri=uri,
        etag=f'"{uuid.uuid4().hex}"',
        size_bytes=1000 + detections,
        width=640,
        height=480,
        detections=[_detection(index) for index in range(detections)],
        timings_ms={"fetch": 1.5, "decode": 2.0, "infer": 10.0, "post": 0.5},
    )


def _failed(uri: str) -> ImageResult:
    return ImageResult(uri=uri, failure_kind="corrupt", failure_message="truncated")


def _stored(db_sessions, model_version_id: int) -> dict[str, tuple[str, int, int]]:
    """The model version's images: ``uri -> (state, attempts, detections)``."""
    detections = (
        select(func.count()).where(DetectionRow.image_id == Image.id).scalar_subquery()
    )
    with db_sessions() as session:
        rows = session.execute(
            select(Image.uri, Image.state, Image.attempts, detections).where(
                Image.model_version_id == model_version_id
            )
        ).all()
    uris = Counter(row.uri for row in rows)
    assert max(uris.values(), default=1) == 1, "an image is stored more than once"
    return {row.uri: (row.state, row.attempts, row[3]) for row in rows}


def test_a_model_version_is_registered_once_per_name_version_and_precision(
    db_sessions,
):
    name = f"test-{uuid.uuid4().hex[:8]}"
    with db_sessions() as session:
        ids = [
            ensure_model_version(
                session, name=name, version="1", precision=precision, sha256=SHA256
            )
            for precision in ("int8", "fp16", "int8")
        ]

    assert ids[0] == ids[2]
    assert ids[0] != ids[1]


def test_a_registered_model_version_refuses_other_weights(db_sessions):
    name = f"test-{uuid.uuid4().hex[:8]}"
    with db_sessions() as session:
        ensure_model_version(
            session, name=name, version="1", precision="int8", sha256=SHA256
        )

        with pytest.raises(ChecksumMismatch, match=SHA256):
            ensure_model_version(
                session, name=name, version="1", precision="int8", sha256="f" * 64
            )


def test_recording_the_same_batch_twice_keeps_one_set_of_rows_and_counts_once(
    db_sessions, model_version_id, job_id
):
    uris = _uris(4)
    detections_per_uri = [3, 0, 2]
    batch = [
        _done(uri, count) for uri, count in zip(uris, detections_per_uri, strict=False)
    ]
    batch.append(_failed(uris[3]))
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )

        for _ in range(2):
            record_results(
                session, job_id=job_id, model_version_id=model_version_id, results=batch
            )
        summary = job_summary(session, job_id)

    stored = _stored(db_sessions, model_version_id)
    expected = {
        uri: (ImageState.DONE, 2, n)
        for uri, n in zip(uris, detections_per_uri, strict=False)
    }
    expected[uris[3]] = (ImageState.FAILED, 2, 0)
    assert stored == expected
    assert (summary.queued, summary.done, summary.failed) == (4, 3, 1)
    assert summary.detections == sum(detections_per_uri)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("queued_first", [True, False], ids=["queued", "unqueued"])
def test_workers_recording_the_same_images_at_once_leave_one_set_of_rows(
    db_sessions, model_version_id, job_id, queued_first
):
    workers = 4
    uris = _uris(8)
    detections_per_uri = {uri: 1 + index % 3 for index, uri in enumerate(uris)}
    if queued_first:
        with db_sessions() as session:
            mark_queued(
                session, job_id=job_id, model_version_id=model_version_id, uris=uris
            )
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def deliver(seed: int) -> None:
        # Each worker holds the batch in another order, as redelivered tasks may.
        batch = [_done(uri, count) for uri, count in detections_per_uri.items()]
        random.Random(seed).shuffle(batch)
        with db_sessions() as session:
            barrier.wait()
            try:
                record_results(
                    session,
                    job_id=job_id,
                    model_version_id=model_version_id,
                    results=batch,
                )
            except BaseException as exc:
                errors.append(exc)

    threads = [
        threading.Thread(target=deliver, args=(seed,)) for seed in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    stored = _stored(db_sessions, model_version_id)
    assert stored == {
        uri: (ImageState.DONE, workers, count)
        for uri, count in detections_per_uri.items()
    }
    with db_sessions() as session:
        summary = job_summary(session, job_id)
    assert (summary.queued, summary.done, summary.failed) == (len(uris), len(uris), 0)
    assert summary.detections == sum(detections_per_uri.values())
    assert summary.state == JobState.FINISHED


def test_a_failed_image_that_succeeds_on_retry_moves_from_failed_to_done(
    db_sessions, model_version_id, job_id
):
    uris = _uris(2)
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_failed(uris[0]), _done(uris[1], 1)],
        )
        after_failure = job_summary(session, job_id)

        requeued = mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        reopened = job_summary(session, job_id)
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[0], 2)],
        )
        after_retry = job_summary(session, job_id)

    assert (after_failure.done, after_failure.failed) == (1, 1)
    assert after_failure.state == JobState.FINISHED
    assert requeued == [uris[0]]
    assert (reopened.queued, reopened.done, reopened.failed) == (2, 1, 0)
    assert (reopened.state, reopened.finished_at) == (JobState.RUNNING, None)
    assert (after_retry.queued, after_retry.done, after_retry.failed) == (2, 2, 0)
    assert after_retry.state == JobState.FINISHED
    assert _stored(db_sessions, model_version_id)[uris[0]] == (ImageState.DONE, 1, 2)


def test_a_failure_delivered_after_a_success_keeps_the_done_result(
    db_sessions, model_version_id, job_id
):
    uri = _uris(1)[0]
    with db_sessions() as session:
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uri, 2)],
        )
        counts = record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_failed(uri)],
        )
        summary = job_summary(session, job_id)

    assert (counts.done, counts.failed, counts.kept) == (0, 0, 1)
    assert _stored(db_sessions, model_version_id) == {uri: (ImageState.DONE, 1, 2)}
    assert (summary.done, summary.failed) == (1, 0)


def test_select_pending_leaves_out_done_images_and_keeps_the_order(
    db_sessions, model_version_id, job_id
):
    uris = _uris(6)
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris[:4]
        )
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[1], 1), _failed(uris[2]), _done(uris[4], 0)],
        )
        listed = [uris[5], *uris, uris[0]]

        pending = select_pending(session, listed, model_version_id)

    done = {uris[1], uris[4]}
    assert pending == [uri for uri in dict.fromkeys(listed) if uri not in done]


def test_a_done_image_is_queued_again_only_when_forced(
    db_sessions, model_version_id, job_id
):
    uri = _uris(1)[0]
    with db_sessions() as session:
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uri, 1)],
        )
        unforced = mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=[uri]
        )
        state_after_unforced = _stored(db_sessions, model_version_id)[uri][0]
        forced = mark_queued(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            uris=[uri],
            force=True,
        )
        summary = job_summary(session, job_id)

    assert (unforced, state_after_unforced) == ([], ImageState.DONE)
    assert forced == [uri]
    assert _stored(db_sessions, model_version_id)[uri][0] == ImageState.QUEUED
    assert (summary.queued, summary.done, summary.state) == (1, 0, JobState.RUNNING)


def test_queueing_the_same_uris_again_counts_them_once_per_job(
    db_sessions, model_version_id, job_id
):
    uris = _uris(3)
    with db_sessions() as session:
        first = mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        again = mark_queued(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            uris=[*uris, uris[0]],
        )
        other_job = create_job(
            session, source="s3://bucket/again/", model_version_id=model_version_id
        )
        taken_over = mark_queued(
            session, job_id=other_job, model_version_id=model_version_id, uris=uris
        )
        summaries = [job_summary(session, job) for job in (job_id, other_job)]

    assert (first, again, taken_over) == (uris, [], uris)
    assert [summary.queued for summary in summaries] == [3, 3]


def test_a_job_whose_queued_images_all_pass_to_another_job_is_finished(
    db_sessions, model_version_id, job_id
):
    uris = _uris(3)
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[0], 1)],
        )
        other_job = create_job(
            session, source="s3://bucket/rerun/", model_version_id=model_version_id
        )
        mark_queued(
            session, job_id=other_job, model_version_id=model_version_id, uris=uris
        )
        first, second = (job_summary(session, job) for job in (job_id, other_job))

    assert (first.state, first.queued, first.done) == (JobState.FINISHED, 3, 1)
    assert (second.state, second.queued) == (JobState.RUNNING, 2)


AWKWARD_KEYS = {
    "space": "holiday photos/beach day 1.jpg",
    "plus": "a+b/c+d.jpg",
    "percent": "100%/50%20off.jpg",
    "hash": "tags/#sunset.jpg",
    "question mark": "what?/why?.jpg",
    "unicode": "fotos/Zürich/東京/ñandú 🐦.jpg",
    "decomposed unicode": "fotos/Zu\u0308rich.jpg",
    "trailing space": "dir/name.jpg ",
    "double slash": "dir//name.jpg",
    "3000 characters": "deep/" + "x" * 2991 + ".jpg",
}


@pytest.mark.parametrize("key", AWKWARD_KEYS.values(), ids=AWKWARD_KEYS.keys())
def test_awkward_keys_round_trip_exactly(db_sessions, model_version_id, job_id, key):
    uri = f"s3://bucket/{uuid.uuid4().hex[:8]}/{key}"
    with db_sessions() as session:
        queued = mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=[uri]
        )
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uri, 1)],
        )
        pending = select_pending(session, [uri], model_version_id)

    assert queued == [uri]
    assert pending == []
    assert _stored(db_sessions, model_version_id) == {uri: (ImageState.DONE, 1, 1)}


def test_uris_that_differ_only_in_unicode_normalisation_are_different_images(
    db_sessions, model_version_id, job_id
):
    prefix = f"s3://bucket/{uuid.uuid4().hex[:8]}/"
    uris = [prefix + "Z\u00fcrich.jpg", prefix + "Zu\u0308rich.jpg"]
    with db_sessions() as session:
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[0], 1)],
        )
        pending = select_pending(session, uris, model_version_id)

    assert pending == [uris[1]]


def test_detections_are_stored_with_their_box_polygons_and_holes(
    db_sessions, model_version_id, job_id
):
    uri = _uris(1)[0]
    result = _done(uri, 2)
    with db_sessions() as session:
        record_results(
            session, job_id=job_id, model_version_id=model_version_id, results=[result]
        )
        rows = session.scalars(
            select(DetectionRow)
            .join(Image, DetectionRow.image_id == Image.id)
            .where(Image.uri == uri, Image.model_version_id == model_version_id)
            .order_by(DetectionRow.class_id)
        ).all()

        stored = [
            (
                row.class_id,
                row.class_name,
                row.score,
                (row.x1, row.y1, row.x2, row.y2),
                row.polygons,
                row.mask_area,
            )
            for row in rows
        ]
    expected = [
        (
            detection.class_id,
            detection.class_name,
            detection.score,
            detection.box_xyxy,
            [
                {
                    "hole": hole,
                    "xy": np.round(
                        ring.astype(np.float64), defaults.POLYGON_DECIMALS
                    ).tolist(),
                }
                for ring, hole in zip(
                    detection.polygons, detection.polygon_holes, strict=True
                )
            ],
            detection.mask_area_px,
        )
        for detection in result.detections
    ]
    assert stored == expected


def test_a_detection_with_a_hole_flag_missing_is_refused_before_anything_is_written(
    db_sessions, model_version_id, job_id
):
    uri = _uris(1)[0]
    broken = Detection(0, "c", 0.9, (0, 0, 1, 1), [np.zeros((3, 2))], [], 1)
    with db_sessions() as session, pytest.raises(ValueError, match="hole flag"):
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[ImageResult(uri, detections=[broken])],
        )

    assert _stored(db_sessions, model_version_id) == {}


def test_a_job_summary_counts_every_state_and_the_detections(
    db_sessions, model_version_id, job_id
):
    uris = _uris(5)
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        add_skipped(session, job_id, 7)
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[0], 2), _done(uris[1], 3), _failed(uris[2])],
        )
        running = job_summary(session, job_id)
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uris[3], 0), _failed(uris[4])],
        )
        finished = job_summary(session, job_id)

    assert (running.queued, running.done, running.failed, running.skipped) == (
        5,
        2,
        1,
        7,
    )
    assert (running.state, running.finished_at, running.detections) == (
        JobState.RUNNING,
        None,
        5,
    )
    assert (finished.done, finished.failed, finished.state) == (3, 2, JobState.FINISHED)
    assert finished.created_at <= finished.finished_at
    assert finished.source == "s3://bucket/"
    assert finished.model.endswith("/1") and finished.precision == "int8"


def test_deleting_an_image_deletes_its_detections(
    db_sessions, model_version_id, job_id
):
    uri = _uris(1)[0]
    with db_sessions() as session:
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uri, 3)],
        )
        image_id = session.scalar(
            select(Image.id).where(
                Image.uri == uri, Image.model_version_id == model_version_id
            )
        )
        session.execute(delete(Image).where(Image.id == image_id))
        session.commit()

        left = session.scalar(
            select(func.count()).where(DetectionRow.image_id == image_id)
        )
        session.commit()
    assert left == 0


def _record_for_missing_job(session, model_version_id, uri):
    record_results(
        session,
        job_id="no-such-job",
        model_version_id=model_version_id,
        results=[_done(uri, 1)],
    )


def _queue_for_missing_job(session, model_version_id, uri):
    mark_queued(
        session, job_id="no-such-job", model_version_id=model_version_id, uris=[uri]
    )


@pytest.mark.parametrize(
    "operation",
    [_record_for_missing_job, _queue_for_missing_job],
    ids=["record_results", "mark_queued"],
)
def test_a_database_error_is_a_database_error_naming_the_job_and_the_uri(
    db_sessions, model_version_id, operation
):
    uri = _uris(1)[0]
    with db_sessions() as session:
        with pytest.raises(DatabaseError) as raised:
            operation(session, model_version_id, uri)

        still_usable = select_pending(session, [uri], model_version_id)

    assert "no-such-job" in str(raised.value)
    assert uri in str(raised.value)
    assert isinstance(raised.value.__cause__, SQLAlchemyError)
    assert still_usable == [uri]


@pytest.mark.parametrize(
    "operation",
    [
        lambda session: add_skipped(session, "no-such-job", 1),
        lambda session: finish_if_drained(session, "no-such-job"),
        lambda session: job_summary(session, "no-such-job"),
    ],
    ids=["add_skipped", "finish_if_drained", "job_summary"],
)
def test_an_unknown_job_is_reported_as_not_found(db_sessions, operation):
    with db_sessions() as session, pytest.raises(JobNotFound, match="no-such-job"):
        operation(session)


def test_a_job_with_every_image_skipped_finishes_once_the_producer_says_so(
    db_sessions, model_version_id, job_id
):
    uris = _uris(2)
    with db_sessions() as session:
        record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[_done(uri, 0) for uri in uris],
        )
        later_job = create_job(
            session, source="s3://bucket/", model_version_id=model_version_id
        )
        pending = select_pending(session, uris, model_version_id)
        add_skipped(session, later_job, len(uris) - len(pending))
        before = job_summary(session, later_job)

        finished = finish_if_drained(session, later_job)
        after = job_summary(session, later_job)

    assert pending == []
    assert (before.state, before.skipped) == (JobState.RUNNING, 2)
    assert finished
    assert after.state == JobState.FINISHED and after.finished_at is not None


def test_a_job_with_an_image_still_queued_is_not_finished(
    db_sessions, model_version_id, job_id
):
    with db_sessions() as session:
        mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=_uris(1)
        )

        finished = finish_if_drained(session, job_id)
        summary = job_summary(session, job_id)

    assert not finished
    assert (summary.state, summary.finished_at) == (JobState.RUNNING, None)
