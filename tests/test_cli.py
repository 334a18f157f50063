"""The ``segbatch`` command line as a user meets it: help, bad settings, exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from segbatch.cli import app
from segbatch.config import Settings, load_settings
from tests.support.cases import REPO

# Every command option that a variable also sets, by command.
OPTION_VARIABLES = {
    ("run",): ["SEGBATCH_DATABASE_URL", "SEGBATCH_BATCH_SIZE", "SEGBATCH_MODEL"],
    ("enqueue",): [
        "SEGBATCH_BATCH_SIZE",
        "SEGBATCH_MAX_QUEUED_BATCHES",
        "SEGBATCH_MODEL",
    ],
    ("status",): ["SEGBATCH_DATABASE_URL"],
    ("db", "upgrade"): ["SEGBATCH_DATABASE_URL"],
    ("model", "publish"): ["SEGBATCH_MODELS_DIR"],
    ("model", "verify"): ["SEGBATCH_MODELS_DIR"],
}


def segbatch(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60):
    """``python -m segbatch ARGS`` in a fresh process, its output captured.

    The terminal is wide enough for any message to stay on one line.
    """
    return subprocess.run(
        [sys.executable, "-m", "segbatch", *args],
        env={**os.environ, "COLUMNS": "500", **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "variables"),
    OPTION_VARIABLES.items(),
    ids=[" ".join(command) for command in OPTION_VARIABLES],
)
def test_the_help_of_an_option_names_the_variable_that_also_sets_it(command, variables):
    result = CliRunner().invoke(
        app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    )

    assert result.exit_code == 0, result.output
    for variable in variables:
        assert variable in result.output


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["run", "/nonexistent", "--batch-size", "0"], {}, "SEGBATCH_BATCH_SIZE"),
        (
            ["enqueue", "/nonexistent", "--batch-size", "-1"],
            {},
            "SEGBATCH_BATCH_SIZE",
        ),
        (
            ["enqueue", "/nonexistent", "--max-queued-batches", "0"],
            {},
            "SEGBATCH_MAX_QUEUED_BATCHES",
        ),
        (["status", "x"], {"SEGBATCH_BATCH_SIZE": "abc"}, "SEGBATCH_BATCH_SIZE"),
        (["enqueue", "/x"], {"SEGBATCH_BROKER_URL": "127.0.0.1:6379"}, "BROKER"),
        (
            ["run", "/x"],
            {"SEGBATCH_CLASS_AGNOSTIC_NMS": "maybe"},
            "SEGBATCH_CLASS_AGNOSTIC_NMS",
        ),
    ],
    ids=[
        "run batch size 0",
        "enqueue batch size -1",
        "enqueue max queued 0",
        "batch size abc in the environment",
        "broker URL without a scheme",
        "a flag that is neither true nor false",
    ],
)
def test_a_bad_setting_ends_the_command_with_one_line_naming_it(args, env, named):
    completed = segbatch(*args, env=env)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error:")
    assert named in completed.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), (" Yes ", True), ("off", False), ("0", False)],
)
def test_a_flag_reads_the_usual_spellings_of_true_and_false(raw, expected):
    settings = load_settings({"SEGBATCH_CLASS_AGNOSTIC_NMS": raw})

    assert settings.class_agnostic_nms is expected


@pytest.mark.parametrize(
    "changes",
    [{"batch_size": 0}, {"max_queued_batches": -1}, {"confidence": 1.5}],
    ids=["batch size", "queued batches", "confidence"],
)
def test_a_settings_copy_is_checked_like_settings_read_from_the_environment(changes):
    from segbatch.errors import ConfigError

    with pytest.raises(ConfigError, match="must be"):
        Settings().replace(**changes)


def test_run_refuses_fewer_than_one_local_process():
    completed = segbatch("run", "/nonexistent", "--processes", "0")

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "--processes" in completed.stderr


def test_run_on_a_missing_path_fails_with_one_line_and_records_nothing(tmp_path):
    database = tmp_path / "results.sqlite"
    missing = tmp_path / "no such folder"

    completed = segbatch("run", str(missing), "--database-url", f"sqlite:///{database}")

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error:")
    assert str(missing) in completed.stderr
    assert not database.exists()


def test_run_on_an_empty_source_string_fails_instead_of_taking_the_current_folder(
    tmp_path,
):
    database = tmp_path / "results.sqlite"

    completed = segbatch("run", "", "--database-url", f"sqlite:///{database}")

    assert completed.returncode == 1
    assert completed.stderr.startswith("error:") and "empty" in completed.stderr
    assert not database.exists()


@pytest.mark.parametrize("name", ["no images", "a[/b] [raw]"])
def test_run_on_a_folder_without_images_says_so(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("not an image")

    completed = segbatch(
        "run", str(folder), "--database-url", f"sqlite:///{tmp_path / 'r.sqlite'}"
    )

    assert completed.returncode == 0, completed.stderr
    assert f"no images found in {folder}" in completed.stderr
    assert str(folder) in completed.stdout  # the summary's source, verbatim


def test_status_names_a_missing_results_file_and_creates_none(tmp_path):
    database = tmp_path / "segbatch.sqlite"

    completed = segbatch(
        "status", "some-job", "--database-url", f"sqlite:///{database}"
    )

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert f"no results database at {database}" in completed.stderr
    assert not database.exists()


def test_run_names_the_missing_folder_of_its_results_file(tmp_path):
    database = tmp_path / "no such folder" / "r.sqlite"

    completed = segbatch(
        "run", str(REPO / "models" / "demo"), "--database-url", f"sqlite:///{database}"
    )

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert f"no folder {database.parent}" in completed.stderr


def test_draw_writes_the_image_at_its_size_with_the_detections_drawn(tmp_path):
    import cv2

    source = REPO / "models" / "demo" / "demo-06.jpg"
    out = tmp_path / "drawn.png"

    completed = segbatch("draw", str(source), "--out", str(out))

    assert completed.returncode == 0, completed.stderr
    drawn, original = cv2.imread(str(out)), cv2.imread(str(source))
    assert drawn.shape == original.shape
    drawn_count = re.match(r"(\d+) detections drawn to ", completed.stderr)
    assert drawn_count and int(drawn_count.group(1)) > 0
    assert (cv2.absdiff(drawn, original) > 40).any()  # masks and boxes painted on


def test_draw_into_a_missing_folder_names_it_before_any_work(tmp_path):
    out = tmp_path / "no such folder" / "drawn.png"

    completed = segbatch(
        "draw", str(REPO / "models" / "demo" / "demo-06.jpg"), "--out", str(out)
    )

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "--out" in completed.stderr and str(out.parent) in completed.stderr


@pytest.mark.parametrize(
    ("image", "out_name", "named"),
    [
        (REPO / "models" / "demo", "drawn.png", "is a directory"),
        (REPO / "models" / "demo" / "demo-06.jpg", "drawn.txt", ".png or .jpg"),
    ],
    ids=["folder as image", "unwritable extension"],
)
def test_draw_refuses_a_bad_argument_with_one_message(tmp_path, image, out_name, named):
    completed = segbatch("draw", str(image), "--out", str(tmp_path / out_name))

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert named in " ".join(completed.stderr.split())
    assert not (tmp_path / out_name).exists()
