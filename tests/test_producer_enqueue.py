"""Enqueuing a source: PostgreSQL, Celery on the real Redis and moto's S3 server."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from segbatch.config import Settings
from segbatch.errors import BrokerError, StorageError
from segbatch.producer.backpressure import queue_depth
from segbatch.producer.batching import chunked
from segbatch.producer.enqueue import EnqueueReport, enqueue
from segbatch.producer.listing import iter_image_uris
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.schema.tables import Image, ImageState, Job, JobState
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


class InterruptedRedis:
    """The real Redis client, but Ctrl-C arrives at its ``calls + 1``-th pipeline."""

    def __init__(self, client, calls: int) -> None:
        self.client = client
        self.calls_left = calls

    def pipeline(self, *args, **kwargs):
        if self.calls_left == 0:
            raise KeyboardInterrupt
        self.calls_left -= 1
        return self.client.pipeline(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_producer_stopped_while_waiting_has_recorded_as_queued_only_what_it_sent(
    tmp_path, sessions, celery_app, model_version_id, broker_queue
):
    for index in range(20):
        (tmp_path / f"{index:02d}.jpg").write_bytes(b"x")
    settings = Settings(batch_size=2, max_queued_batches=1)
    client, queue_name = broker_queue
    # Measured once before the job exists, then once for each of the two batches
    # that find room, then the producer waits on a full queue and is stopped.
    interrupted = InterruptedRedis(client, calls=5)

    with pytest.raises(KeyboardInterrupt):
        enqueue(
            str(tmp_path),
            settings=settings,
            session_factory=sessions,
            celery_app=celery_app,
            model_version_id=model_version_id,
            progress=False,
            queue_name=queue_name,
            redis_client=interrupted,
            poll_interval_s=0.01,
        )

    sent = [uri for _, args in queued_messages(client, queue_name) for uri in args[2]]
    (job_id,) = {args[0] for _, args in queued_messages(client, queue_name)}
    with sessions() as session:
        recorded = session.scalars(
            select(Image.uri).where(
                Image.job_id == job_id, Image.state == ImageState.QUEUED
            )
        ).all()
        stopped = store.job_summary(session, job_id)
        store.record_results(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            results=[ImageResult(uri=uri, width=4, height=4) for uri in sent],
        )
        drained = store.job_summary(session, job_id)

    assert len(sent) == 2 * settings.batch_size
    assert sorted(recorded) == sorted(sent)
    assert (stopped.queued, stopped.state) == (len(sent), JobState.RUNNING)
    assert (drained.done, drained.state) == (len(sent), JobState.FINISHED)


def test_a_producer_stopped_before_it_sent_anything_leaves_its_job_finished(
    tmp_path, sessions, celery_app, model_version_id, broker_queue
):
    (tmp_path / "a.jpg").write_bytes(b"x")
    client, queue_name = broker_queue
    # Measured once before the job exists; stopped while waiting for room.
    interrupted = InterruptedRedis(client, calls=1)

    with pytest.raises(KeyboardInterrupt):
        run_enqueue(
            str(tmp_path),
            Settings(),
            sessions,
            celery_app,
            model_version_id,
            (interrupted, queue_name),
        )

    with sessions() as session:
        (job_id,) = session.scalars(
            select(Job.id).where(Job.model_version_id == model_version_id)
        ).all()
        stopped = store.job_summary(session, job_id)
    assert (stopped.state, stopped.queued) == (JobState.FINISHED, 0)
    assert queued_messages(client, queue_name) == []


def test_an_unreachable_broker_fails_before_any_job_is_created(
    tmp_path, sessions, model_version_id, broker_queue
):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    app = make_celery(Settings(broker_url=dead_url))
    dead = redis.Redis.from_url(dead_url, retry=Retry(NoBackoff(), 0))

    with pytest.raises(BrokerError, match="cannot measure queue"):
        enqueue(
            str(tmp_path),
            settings=Settings(),
            session_factory=sessions,
            celery_app=app,
            model_version_id=model_version_id,
            progress=False,
            queue_name=broker_queue[1],
            redis_client=dead,
        )

    with sessions() as session:
        jobs = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.model_version_id == model_version_id)
        )
    assert jobs == 0


def test_an_image_listed_twice_pages_apart_is_sent_and_counted_once(
    tmp_path, sessions, celery_app, model_version_id, broker_queue, monkeypatch
):
    from segbatch import defaults

    monkeypatch.setattr(defaults, "ENQUEUE_PAGE_SIZE", 3)
    names = [f"{index}.jpg" for index in range(5)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join([*names, names[0], names[4], names[2]]) + "\n")

    report = run_enqueue(
        str(manifest),
        Settings(batch_size=2),
        sessions,
        celery_app,
        model_version_id,
        broker_queue,
    )

    sent = [uri for _, args in queued_messages(*broker_queue) for uri in args[2]]
    with sessions() as session:
        summary = store.job_summary(session, report.job_id)
    assert sorted(sent) == sorted(f"file://{tmp_path / name}" for name in names)
    assert report.queued == summary.queued == len(names)
