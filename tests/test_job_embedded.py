"""A whole job in the embedded mode: local processes and a SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from segbatch.config import load_settings
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.schema.tables import Job, JobState
from segbatch.workers import embedded
from segbatch.workers.embedded import run_embedded
from tests.support.cases import CASES, CASES_DIR, REPO, demo_images
from tests.support.jobs import (
    assert_detection_is_consistent,
    assert_same_detections,
    images_of_job,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A local folder with the demo images and every case, under awkward names."""
    root = tmp_path / "archive"
    for path in demo_images():
        target = root / "demo" / f"#{path.stem} +copy?.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    for case in CASES:
        target = root / case.key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((CASES_DIR / case.file).read_bytes())
    return root


def test_the_embedded_mode_records_every_image_with_its_outcome(archive, tmp_path):
    settings = load_settings().replace(
        database_url=f"sqlite:///{tmp_path / 'results.sqlite'}", batch_size=5
    )

    summary = run_embedded(str(archive), settings, processes=2)

    bad = [case for case in CASES if case.failure_kind]
    assert summary.listed == len(demo_images()) + len(CASES)
    assert (summary.done, summary.failed) == (summary.listed - len(bad), len(bad))
    assert summary.detections > 0

    stored = images_of_job(
        session_factory(make_engine(settings.database_url)), summary.job_id
    )
    for case in CASES:
        image = next(i for i in stored.values() if i.uri.endswith(case.key))
        if case.failure_kind is None:
            assert image.state == "done", image.failure_message
        else:
            assert (image.state, image.failure_kind) == ("failed", case.failure_kind)
            assert case.key in image.failure_message
            for word in case.message_words:
                assert word in image.failure_message.lower()
        if case.size_wh is not None:
            assert (image.width, image.height) == case.size_wh
    for image in stored.values():
        for detection in image.detections:
            assert_detection_is_consistent(detection, (image.width, image.height))


def test_one_process_and_two_processes_give_the_same_rows(archive, tmp_path):
    runs = []
    for processes in (1, 2):
        url = f"sqlite:///{tmp_path / f'{processes}.sqlite'}"
        settings = load_settings().replace(database_url=url, batch_size=4)
        summary = run_embedded(str(archive / "demo"), settings, processes=processes)
        runs.append(images_of_job(session_factory(make_engine(url)), summary.job_id))

    one, two = runs
    assert set(one) == set(two)
    for uri, image in one.items():
        assert_same_detections(two[uri].detections, image.detections, uri)


def test_running_again_skips_what_is_done_and_force_rewrites_the_same_rows(
    archive, tmp_path
):
    url = f"sqlite:///{tmp_path / 'again.sqlite'}"
    settings = load_settings().replace(database_url=url)
    sessions = session_factory(make_engine(url))
    first = run_embedded(str(archive / "demo"), settings)
    before = images_of_job(sessions, first.job_id)

    second = run_embedded(str(archive / "demo"), settings)
    assert (second.skipped, second.done) == (first.done, 0)

    forced = run_embedded(str(archive / "demo"), settings, force=True)
    after = images_of_job(sessions, forced.job_id)
    assert forced.done == first.done
    assert set(after) == set(before)
    for uri, image in after.items():
        assert_same_detections(image.detections, before[uri].detections, uri)


def test_a_run_stopped_before_its_first_batch_leaves_no_job_running(
    archive, tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'stopped.sqlite'}"
    settings = load_settings().replace(database_url=url)
    sessions = session_factory(make_engine(url))

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "queue_batch", stop)
    with pytest.raises(KeyboardInterrupt):
        run_embedded(str(archive / "demo"), settings)
    monkeypatch.undo()

    with sessions() as session:
        (job_id,) = session.scalars(select(Job.id)).all()
        stopped = store.job_summary(session, job_id)
    assert (stopped.state, stopped.queued, stopped.done) == (JobState.FINISHED, 0, 0)

    again = run_embedded(str(archive / "demo"), settings)
    assert (again.skipped, again.done) == (0, len(demo_images()))


def test_the_readme_command_processes_the_demo_images(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "segbatch", "run", str(REPO / "models" / "demo")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "done" in completed.stdout
    assert (tmp_path / "segbatch.sqlite").exists()
