"""Enqueuing a source: PostgreSQL, Celery on the real Redis and moto's S3 server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
from sqlalchemy import func, select

from segbatch.config import Settings
from segbatch.errors import StorageError
from segbatch.producer.backpressure import queue_depth
from segbatch.producer.batching import chunked
from segbatch.producer.enqueue import EnqueueReport, enqueue
from segbatch.producer.listing import iter_image_uris
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.schema.tables import Job
from segbatch.workers.celery_app import make_celery
from segbatch.workers.results import ImageResult


@pytest.fixture
def sessions(postgres_url):
    engine = make_engine(postgres_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def model_version_id(sessions) -> int:
    with sessions() as session:
        return store.ensure_model_version(
            session,
            name=f"enqueue-test-{uuid.uuid4().hex[:8]}",
            version="1",
            precision="int8",
            sha256="0" * 64,
        )


@pytest.fixture
def celery_app(producer_broker_url):
    app = make_celery(Settings(broker_url=producer_broker_url))
    yield app
    app.close()


@pytest.fixture
def images_source(s3_client, s3_bucket) -> str:
    """An S3 prefix of 37 images, among other objects."""
    for index in range(37):
        key = f"shots/{index:03d} #{index}.jpg"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"not decoded here")
    for key in ["shots/readme.txt", "shots/sub/", "elsewhere/x.jpg"]:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"")
    return f"s3://{s3_bucket}/shots/"


def queued_messages(client, queue_name: str) -> list[tuple[str, list]]:
    """The task name and arguments of every message waiting in the queue."""
    messages = []
    for raw in client.lrange(queue_name, 0, -1):
        envelope = json.loads(raw)
        assert envelope["content-type"] == "application/json"
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        messages.append((envelope["headers"]["task"], args))
    return messages


def run_enqueue(source, settings, sessions, celery_app, model_version_id, queue, **kw):
    client, queue_name = queue
    kw.setdefault("progress", False)
    return enqueue(
        source,
        settings=settings,
        session_factory=sessions,
        celery_app=celery_app,
        model_version_id=model_version_id,
        queue_name=queue_name,
        redis_client=client,
        **kw,
    )


def test_every_listed_image_is_sent_once_in_batches_of_the_configured_size(
    images_source, s3_client, sessions, celery_app, model_version_id, broker_queue
):
    settings = Settings(batch_size=8, max_queued_batches=100, model="shapes-seg/1")
    listed = [info.uri for info in iter_image_uris(images_source, client=s3_client)]

    report = run_enqueue(
        images_source,
        settings,
        sessions,
        celery_app,
        model_version_id,
        broker_queue,
        s3_client=s3_client,
    )

    expected_batches = list(chunked(listed, 8))
    assert report == EnqueueReport(
        job_id=report.job_id,
        listed=len(listed),
        queued=len(listed),
        skipped=0,
        batches=len(expected_batches),
    )
    messages = queued_messages(*broker_queue)
    assert {name for name, _ in messages} == {"segbatch.segment_batch"}
    assert sorted(args for _, args in messages) == sorted(
        [report.job_id, "shapes-seg/1", batch] for batch in expected_batches
    )
    with sessions() as session:
        summary = store.job_summary(session, report.job_id)
    assert (summary.source, summary.queued, summary.skipped) == (
        images_source,
        len(listed),
        0,
    )


@pytest.mark.parametrize("force", [False, True], ids=["skip-done", "force"])
def test_images_already_done_are_skipped_unless_forced(
    images_source,
    s3_client,
    sessions,
    celery_app,
    model_version_id,
    broker_queue,
    force,
):
    settings = Settings(batch_size=10, max_queued_batches=100)
    first = run_enqueue(
        images_source,
        settings,
        sessions,
        celery_app,
        model_version_id,
        broker_queue,
        s3_client=s3_client,
    )
    listed = [info.uri for info in iter_image_uris(images_source, client=s3_client)]
    done = listed[::3]
    with sessions() as session:
        store.record_results(
            session,
            job_id=first.job_id,
            model_version_id=model_version_id,
            results=[ImageResult(uri=uri, width=4, height=4) for uri in done],
        )
    client, queue_name = broker_queue
    client.delete(queue_name)

    second = run_enqueue(
        images_source,
        settings,
        sessions,
        celery_app,
        model_version_id,
        broker_queue,
        s3_client=s3_client,
        force=force,
    )

    expected = listed if force else [uri for uri in listed if uri not in done]
    sent = sorted(uri for _, args in queued_messages(*broker_queue) for uri in args[2])
    assert sent == sorted(expected)
    assert (second.listed, second.queued, second.skipped) == (
        len(listed),
        len(expected),
        len(listed) - len(expected),
    )
    with sessions() as session:
        assert store.job_summary(session, second.job_id).skipped == second.skipped


def test_the_producer_waits_while_the_queue_is_full(
    tmp_path, sessions, celery_app, model_version_id, broker_queue
):
    for index in range(12):
        (tmp_path / f"{index:02d}.png").write_bytes(b"x")
    settings = Settings(batch_size=2, max_queued_batches=2)
    client, queue_name = broker_queue
    received: list[bytes] = []
    deepest = 0
    finished = threading.Event()

    def worker() -> None:
        nonlocal deepest
        while not finished.is_set() or client.llen(queue_name):
            deepest = max(deepest, queue_depth(client, queue_name))
            message = client.rpop(queue_name)
            if message is not None:
                received.append(message)
            time.sleep(0.03)

    drainer = threading.Thread(target=worker)
    drainer.start()
    try:
        report = run_enqueue(
            str(tmp_path),
            settings,
            sessions,
            celery_app,
            model_version_id,
            broker_queue,
            poll_interval_s=0.01,
        )
    finally:
        finished.set()
        drainer.join()

    assert report.batches == 6
    assert len(received) == 6
    assert 0 < deepest <= settings.max_queued_batches + 1


def test_the_progress_display_shows_the_counts_on_standard_error(
    tmp_path, sessions, celery_app, model_version_id, broker_queue, capfd
):
    for name in ["a.jpg", "b.jpg", "c.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")

    report = run_enqueue(
        str(tmp_path),
        Settings(batch_size=2),
        sessions,
        celery_app,
        model_version_id,
        broker_queue,
        progress=True,
    )

    out, err = capfd.readouterr()
    assert report.job_id not in out
    assert f"job {report.job_id}" in err
    assert "listed 3  queued 3  skipped 0" in err


def test_an_unlistable_source_fails_before_any_job_is_created(
    s3_client, sessions, celery_app, model_version_id, broker_queue
):
    with pytest.raises(StorageError, match="does not exist"):
        run_enqueue(
            "s3://segbatch-absent-bucket/x/",
            Settings(),
            sessions,
            celery_app,
            model_version_id,
            broker_queue,
            s3_client=s3_client,
        )

    with sessions() as session:
        jobs = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.model_version_id == model_version_id)
        )
    assert jobs == 0
    assert queue_depth(*broker_queue) == 0


def test_the_producer_loads_neither_openvino_nor_the_worker_tasks():
    code = (
        "import sys, segbatch.producer.enqueue, segbatch.workers.celery_app;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith('openvino') or m == 'segbatch.workers.tasks'))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert loaded.stdout.strip() == "[]"
