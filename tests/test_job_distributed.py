"""A whole job through the distributed system, every part real.

The producer lists an S3 bucket (moto's server on loopback) and queues batches on
Redis; a Celery worker process, started here with the real model, segments them and
writes to PostgreSQL. The rows are then checked against the same images processed
in the embedded mode, and the awkward cases against their required outcomes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from segbatch.config import load_settings
from segbatch.schema.db import make_engine, session_factory
from segbatch.workers.embedded import run_embedded
from tests.support.cases import CASES, CASES_DIR, REPO, demo_images
from tests.support.jobs import (
    assert_detection_is_consistent,
    assert_same_detections,
    images_of_job,
    wait_for_job,
)

pytestmark = pytest.mark.slow

BROKER_URL = "redis://127.0.0.1:6379/14"
WORKER_READY_TIMEOUT_S = 90
JOB_TIMEOUT_S = 240


@pytest.fixture
def service_env(s3_endpoint: str, postgres_url: str) -> dict[str, str]:
    """The environment of a deployed worker and producer, aimed at test services."""
    env = dict(os.environ)
    env.update(
        SEGBATCH_BROKER_URL=BROKER_URL,
        SEGBATCH_DATABASE_URL=postgres_url,
        SEGBATCH_BATCH_SIZE="8",
        SEGBATCH_MAX_QUEUED_BATCHES="2",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def celery_worker(
    service_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``segbatch worker`` process on a broker database of its own."""
    broker = redis.Redis.from_url(BROKER_URL)
    broker.flushdb()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "segbatch", "worker", "--concurrency", "1"],
            env=service_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        _wait_for_line(log_path, "ready.", process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        broker.flushdb()
        broker.close()
        if process.returncode not in (0, -signal.SIGTERM):
            print(log_path.read_text(errors="replace")[-4000:])


def _wait_for_line(log_path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if text in log_path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"worker exited:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.3)
    raise AssertionError(f"worker not ready:\n{log_path.read_text()[-4000:]}")


def _enqueue(source: str, env: dict[str, str], *flags: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "segbatch", "enqueue", source, "--no-progress", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip().splitlines()[-1]


def _upload_job(s3_client, bucket: str) -> dict[str, Path]:
    """Demo images twice under awkward keys, and every case: 24 + 9 objects."""
    uploads: dict[str, Path] = {}
    for copy in ("first copy", "zweite+Kopie %20"):
        for path in demo_images():
            uploads[f"archive/{copy}/#{path.stem}?v=1.jpg"] = path
    for case in CASES:
        uploads[f"archive/{case.key}"] = CASES_DIR / case.file
    for key, path in uploads.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return uploads


def test_a_job_goes_from_s3_through_redis_and_a_worker_into_postgres(
    s3_client, s3_bucket, service_env, celery_worker, tmp_path
):
    worker_log = tmp_path / "worker.log"
    uploads = _upload_job(s3_client, s3_bucket)
    assert len(demo_images()) >= 10

    job_id = _enqueue(f"s3://{s3_bucket}/archive/", service_env)

    sessions = session_factory(make_engine(service_env["SEGBATCH_DATABASE_URL"]))
    summary = wait_for_job(sessions, job_id, JOB_TIMEOUT_S)
    bad = [case for case in CASES if case.failure_kind]
    assert summary.queued == len(uploads)
    assert summary.failed == len(bad)
    assert summary.done == len(uploads) - len(bad)

    stored = images_of_job(sessions, job_id)
    assert set(stored) == {f"s3://{s3_bucket}/{key}" for key in uploads}

    # The same images in the embedded mode give the same detections.
    local = tmp_path / "local"
    local.mkdir()
    for path in demo_images():
        (local / path.name).write_bytes(path.read_bytes())
    settings = load_settings().replace(database_url=f"sqlite:///{tmp_path / 'e.db'}")
    embedded = run_embedded(str(local), settings)
    embedded_rows = images_of_job(
        session_factory(make_engine(settings.database_url)), embedded.job_id
    )
    expected = {
        Path(uri).stem: image.detections for uri, image in embedded_rows.items()
    }
    assert sum(len(detections) for detections in expected.values()) > 0

    for key, path in uploads.items():
        image = stored[f"s3://{s3_bucket}/{key}"]
        if path.parent == CASES_DIR:
            continue
        assert image.state == "done", image.failure_message
        assert_same_detections(image.detections, expected[path.stem], key)
        for detection in image.detections:
            assert_detection_is_consistent(detection, (image.width, image.height))

    for case in CASES:
        image = stored[f"s3://{s3_bucket}/archive/{case.key}"]
        if case.failure_kind is None:
            assert image.state == "done", image.failure_message
        else:
            assert image.state == "failed"
            assert image.failure_kind == case.failure_kind
            assert case.key in image.failure_message
            for word in case.message_words:
                assert word in image.failure_message.lower()
        if case.size_wh is not None:
            assert (image.width, image.height) == case.size_wh

    assert celery_worker.poll() is None, "the worker died during the job"
    log = worker_log.read_text(errors="replace")
    ready = [line for line in log.splitlines() if "ready with" in line]
    assert ready and all("ForkPoolWorker" in line for line in ready), ready


def test_a_second_run_skips_done_images_and_force_leaves_one_set_of_rows(
    s3_client, s3_bucket, service_env, celery_worker
):
    for path in demo_images()[:4]:
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"again/{path.name}", Body=path.read_bytes()
        )
    sessions = session_factory(make_engine(service_env["SEGBATCH_DATABASE_URL"]))

    first = _enqueue(f"s3://{s3_bucket}/again/", service_env)
    wait_for_job(sessions, first, JOB_TIMEOUT_S)
    before = images_of_job(sessions, first)

    second = _enqueue(f"s3://{s3_bucket}/again/", service_env)
    with sessions() as session:
        from segbatch.schema import store

        skipped = store.job_summary(session, second)
    assert (skipped.queued, skipped.skipped) == (0, 4)

    forced = _enqueue(f"s3://{s3_bucket}/again/", service_env, "--force")
    wait_for_job(sessions, forced, JOB_TIMEOUT_S)
    after = images_of_job(sessions, forced)

    assert set(after) == set(before)
    for uri, image in after.items():
        assert_same_detections(image.detections, before[uri].detections, uri)
        assert len({d.id for d in image.detections}) == len(before[uri].detections)
