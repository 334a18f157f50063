"""Model versions on disk: found by reference, checked against their sha256."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from segbatch.errors import ChecksumMismatch, ModelError, ModelNotFound
from segbatch.models import registry

ARTIFACT_BYTES = {
    "int8/model.xml": b"<net name='int8'/>\n",
    "int8/model.bin": bytes(range(256)) * 4,
    "fp16/model.xml": b"<net name='fp16'/>\n",
    "fp16/model.bin": bytes(range(255, -1, -1)) * 4,
    "model.onnx": b"onnx bytes",
}


def write_version(models_dir: Path, name: str, version: str) -> Path:
    """A version folder with small artifacts and the metadata that records them."""
    root = models_dir / name / version
    for relative, data in ARTIFACT_BYTES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    metadata = {
        "name": name,
        "version": version,
        "input_size_hw": [320, 320],
        "class_names": ["ellipse", "star"],
        "precision": "int8",
        "artifacts": {"int8": "int8/model.xml", "fp16": "fp16/model.xml"},
        "sha256": {
            relative: registry.file_sha256(root / relative)
            for relative in ARTIFACT_BYTES
        },
    }
    (root / registry.METADATA_FILE).write_text(json.dumps(metadata))
    return root


@pytest.fixture
def models_dir(tmp_path) -> Path:
    write_version(tmp_path, "shapes", "1")
    write_version(tmp_path, "shapes", "2")
    write_version(tmp_path, "other", "7")
    return tmp_path


def test_a_version_whose_artifacts_are_unchanged_verifies(models_dir):
    model = registry.resolve("shapes/2", models_dir)

    registry.verify(model)

    assert model.ref == "shapes/2"
    assert model.ir_path("int8") == models_dir / "shapes" / "2" / "int8" / "model.xml"
    assert model.input_size_hw == (320, 320)


@pytest.mark.parametrize("tampered", sorted(ARTIFACT_BYTES))
def test_a_tampered_artifact_is_refused_naming_the_file(models_dir, tampered):
    model = registry.resolve("shapes/1", models_dir)
    path = model.path / tampered
    path.write_bytes(path.read_bytes() + b"\0")

    with pytest.raises(ChecksumMismatch) as raised:
        registry.verify(model)

    assert str(path) in str(raised.value)
    assert model.sha256(tampered) in str(raised.value)


def test_a_missing_artifact_is_refused_naming_the_file(models_dir):
    model = registry.resolve("shapes/1", models_dir)
    missing = model.path / "int8" / "model.bin"
    missing.unlink()

    with pytest.raises(ChecksumMismatch, match=re.escape(str(missing))):
        registry.verify(model)


def test_verifying_the_ir_alone_ignores_other_artifacts(models_dir):
    model = registry.resolve("shapes/1", models_dir)
    (model.path / "model.onnx").write_bytes(b"changed")

    registry.verify(model, registry.ir_files(model, "int8"))

    with pytest.raises(ChecksumMismatch, match=re.escape("model.onnx")):
        registry.verify(model)


@pytest.mark.parametrize("ref", ["shapes/3", "missing/1", "other/1"])
def test_an_unknown_version_is_not_found_and_the_available_ones_are_listed(
    models_dir, ref
):
    with pytest.raises(ModelNotFound) as raised:
        registry.resolve(ref, models_dir)

    message = str(raised.value)
    assert ref in message
    for available in ("shapes/1", "shapes/2", "other/7"):
        assert available in message


@pytest.mark.parametrize("ref", ["shapes", "/1", "shapes/", ""])
def test_a_reference_without_name_and_version_is_refused(models_dir, ref):
    with pytest.raises(ModelNotFound, match="name/version"):
        registry.resolve(ref, models_dir)


def test_a_build_the_version_lacks_is_a_model_error(models_dir):
    model = registry.resolve("shapes/1", models_dir)

    with pytest.raises(ModelError, match="no fp32 build"):
        model.ir_path("fp32")


def test_publishing_a_version_that_exists_is_refused_and_changes_nothing(
    models_dir, tmp_path
):
    from segbatch.models.toolchain.publish import build_and_publish

    before = {
        path: path.read_bytes()
        for path in (models_dir / "shapes" / "1").rglob("*")
        if path.is_file()
    }

    with pytest.raises(ModelError, match="exists already"):
        build_and_publish(
            tmp_path / "no-run",
            tmp_path / "no-data",
            name="shapes",
            version="1",
            models_dir=models_dir,
        )

    after = {
        path: path.read_bytes()
        for path in (models_dir / "shapes" / "1").rglob("*")
        if path.is_file()
    }
    assert after == before
