"""Recording a batch: a database that is away for a while, a batch that cannot run."""

from __future__ import annotations

import time

import pytest

from segbatch.errors import DatabaseError, DatabaseUnavailable, ModelError
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.schema.tables import ImageState, JobState
from segbatch.workers.recording import record_batch, record_batch_failure
from segbatch.workers.results import ImageResult
from tests.support.jobs import images_of_job
from tests.support.outage import database_offline

OUTAGE_S = 1.5


@pytest.fixture
def own_sessions(own_postgres_url):
    engine = make_engine(own_postgres_url)
    yield session_factory(engine)
    engine.dispose()


def queued_job(sessions, uris: list[str]) -> tuple[str, int]:
    """A job with ``uris`` queued; its id and its model version's."""
    with sessions() as session:
        model_version_id = store.ensure_model_version(
            session, name="recording-test", version="1", precision="int8", sha256="0"
        )
        job_id = store.create_job(
            session, source="s3://bucket/x/", model_version_id=model_version_id
        )
        store.mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
    return job_id, model_version_id


def test_results_are_recorded_once_the_database_is_back_within_the_wait(
    own_postgres_url, own_sessions
):
    uris = ["s3://bucket/x/a.jpg", "s3://bucket/x/b.jpg"]
    job_id, model_version_id = queued_job(own_sessions, uris)
    results = [ImageResult(uri=uri, width=4, height=3) for uri in uris]

    started_s = time.monotonic()
    with database_offline(own_postgres_url, for_s=OUTAGE_S):
        counts = record_batch(
            own_sessions,
            job_id=job_id,
            model_version_id=model_version_id,
            results=results,
            wait_s=30,
            first_pause_s=0.2,
        )

    assert time.monotonic() - started_s >= OUTAGE_S
    assert counts.done == len(uris)
    with own_sessions() as session:
        summary = store.job_summary(session, job_id)
    assert (summary.done, summary.state) == (len(uris), JobState.FINISHED)


def test_a_database_still_away_after_the_wait_is_database_unavailable(
    own_postgres_url, own_sessions
):
    job_id, model_version_id = queued_job(own_sessions, ["s3://bucket/x/a.jpg"])

    with (
        database_offline(own_postgres_url, for_s=OUTAGE_S),
        pytest.raises(DatabaseUnavailable, match=job_id),
    ):
        record_batch(
            own_sessions,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[ImageResult(uri="s3://bucket/x/a.jpg")],
            wait_s=0.3,
            first_pause_s=0.1,
        )


def test_a_database_error_that_will_not_pass_is_raised_without_waiting(
    db_sessions,
):
    started_s = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        record_batch(
            db_sessions,
            job_id="no-such-job",
            model_version_id=-1,
            results=[ImageResult(uri="s3://bucket/x/a.jpg")],
            wait_s=30,
        )

    assert not isinstance(caught.value, DatabaseUnavailable)
    assert time.monotonic() - started_s < 5


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (ModelError("this worker serves other/2"), "model", "other/2"),
        (RuntimeError("out of luck"), "error", "RuntimeError: out of luck"),
    ],
    ids=["segbatch error", "unforeseen error"],
)
def test_a_batch_that_cannot_run_fails_each_image_but_keeps_the_done_ones(
    db_sessions, exc, kind, words
):
    uris = [f"s3://bucket/{kind}/{name}.jpg" for name in ("a", "b", "c")]
    job_id, model_version_id = queued_job(db_sessions, uris)
    with db_sessions() as session:
        store.record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[ImageResult(uri=uris[0], width=4, height=3)],
        )

    counts = record_batch_failure(
        db_sessions, job_id=job_id, uris=[*uris, uris[1]], exc=exc
    )

    stored = images_of_job(db_sessions, job_id)
    with db_sessions() as session:
        summary = store.job_summary(session, job_id)
    assert counts is not None and (counts.failed, counts.kept) == (2, 1)
    assert stored[uris[0]].state == ImageState.DONE
    for uri in uris[1:]:
        assert (stored[uri].state, stored[uri].failure_kind) == ("failed", kind)
        assert words in stored[uri].failure_message
    assert (summary.done, summary.failed, summary.state) == (1, 2, JobState.FINISHED)


def test_a_batch_failure_that_cannot_be_recorded_leaves_the_images_queued(
    own_postgres_url, own_sessions
):
    uris = ["s3://bucket/x/a.jpg"]
    job_id, _ = queued_job(own_sessions, uris)

    with database_offline(own_postgres_url, for_s=OUTAGE_S):
        counts = record_batch_failure(
            own_sessions, job_id=job_id, uris=uris, exc=ModelError("no model")
        )

    assert counts is None
    assert images_of_job(own_sessions, job_id)[uris[0]].state == ImageState.QUEUED
