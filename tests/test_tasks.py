"""The Celery batch task run in this process, with the real model and PostgreSQL."""

from __future__ import annotations

import pytest

from segbatch.config import load_settings
from segbatch.models import registry
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.schema.tables import JobState
from segbatch.workers import runtime
from tests.support.jobs import images_of_job


@pytest.fixture
def worker_runtime(postgres_url, monkeypatch):
    """A fresh worker runtime on the test database; the previous one comes back."""
    monkeypatch.setenv("SEGBATCH_DATABASE_URL", postgres_url)
    monkeypatch.setattr(runtime, "_runtime", None)
    return runtime.get_runtime()


@pytest.fixture
def sessions(postgres_url):
    engine = make_engine(postgres_url)
    yield session_factory(engine)
    engine.dispose()


def queued_job(sessions, uris: list[str]) -> str:
    """A job of the configured model with ``uris`` queued."""
    settings = load_settings()
    identity = registry.identity(registry.resolve(settings.model, settings.models_dir))
    with sessions() as session:
        model_version_id = store.ensure_model_version(session, **identity.__dict__)
        job_id = store.create_job(
            session, source="s3://bucket/x/", model_version_id=model_version_id
        )
        store.mark_queued(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
    return job_id


def test_a_batch_for_a_model_the_worker_does_not_serve_fails_its_images_by_name(
    worker_runtime, sessions, tmp_path
):
    from segbatch.workers.tasks import segment_batch

    uris = [f"file://{tmp_path}/{name}.jpg" for name in ("a", "b")]
    job_id = queued_job(sessions, uris)

    outcome = segment_batch.apply(args=[job_id, "other-model/9", uris])

    assert outcome.failed()
    stored = images_of_job(sessions, job_id)
    with sessions() as session:
        summary = store.job_summary(session, job_id)
    assert (summary.failed, summary.state) == (len(uris), JobState.FINISHED)
    for uri in uris:
        assert (stored[uri].state, stored[uri].failure_kind) == ("failed", "model")
        assert "other-model/9" in stored[uri].failure_message
        assert worker_runtime.model.ref in stored[uri].failure_message
