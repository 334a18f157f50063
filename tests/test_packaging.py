"""The built distribution carries the models and finds them once installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segbatch.models import registry
from tests.support.cases import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), "."],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    (built,) = out.glob("segbatch-*.whl")
    return built


def test_the_wheel_carries_every_artifact_of_every_model_version(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())

    versions = registry.available(REPO / "models")
    for ref in versions:
        model = registry.resolve(ref, REPO / "models")
        for relative in model.metadata["sha256"]:
            assert f"segbatch/models/{ref}/{relative}" in names
    assert any(name.startswith("segbatch/models/demo/") for name in names)
    assert "segbatch/schema/alembic.ini" in names
    assert not any(name.endswith(".pt") and "toolchain" in name for name in names)


def test_an_installed_segbatch_finds_its_models_inside_the_package(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    probe = (
        "from segbatch.config import MODELS_DIR;"
        "from segbatch.models import registry;"
        "print(MODELS_DIR); print(registry.available(MODELS_DIR))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    models_dir, available = completed.stdout.splitlines()

    assert Path(models_dir) == target / "segbatch" / "models"
    assert available == str(registry.available(REPO / "models"))
