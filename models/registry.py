"""Model versions on disk: ``models/<name>/<version>/`` with a ``metadata.json``.

A version folder holds every build of one trained model and a metadata file::

    models/shapes-seg/1/
        metadata.json      name, version, architecture, input size, classes,
                           the sha256 of every artifact, dataset, recipe, evaluation
        int8/model.xml     OpenVINO INT8 IR, what workers load
        int8/model.bin
        fp16/model.xml     OpenVINO FP16 IR
        fp16/model.bin
        model.onnx         the ONNX export
        model.pt           the trained PyTorch weights
        report.md          the evaluation report

A published version never changes: its artifacts are checked against the recorded
sha256 before use, and a model that differs is refused. A new model is a new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segbatch.errors import ChecksumMismatch, ModelError, ModelNotFound

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelVersion:
    """One published model version and its metadata."""

    name: str
    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def ref(self) -> str:
        """The ``name/version`` reference that tasks and settings use."""
        return f"{self.name}/{self.version}"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    @property
    def input_size_hw(self) -> tuple[int, int]:
        height, width = self.metadata["input_size_hw"]
        return int(height), int(width)

    def ir_path(self, precision: str = "int8") -> Path:
        """The ``.xml`` of the OpenVINO IR of ``precision`` (``int8`` or ``fp16``)."""
        try:
            relative = self.metadata["artifacts"][precision]
        except KeyError as exc:
            raise ModelError(
                f"model {self.ref} has no {precision} build; it has "
                f"{sorted(self.metadata.get('artifacts', {}))}"
            ) from exc
        return self.path / relative

    def sha256(self, relative_path: str) -> str:
        return str(self.metadata["sha256"][relative_path])


def resolve(ref: str, models_dir: Path) -> ModelVersion:
    """Find the model version ``name/version`` under ``models_dir``."""
    name, _, version = ref.partition("/")
    if not name or not version:
        raise ModelNotFound(
            f"expected a model reference like 'name/version', got {ref!r}"
        )
    path = models_dir / name / version
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise ModelNotFound(
            f"model {ref} not found: no {METADATA_FILE} in {path} "
            f"(available: {', '.join(available(models_dir)) or 'none'})"
        )
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {metadata_path}: {exc}") from exc
    return ModelVersion(name=name, version=version, path=path, metadata=metadata)


def available(models_dir: Path) -> list[str]:
    """Every ``name/version`` under ``models_dir``, sorted."""
    return sorted(
        f"{meta.parent.parent.name}/{meta.parent.name}"
        for meta in models_dir.glob(f"*/*/{METADATA_FILE}")
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(model: ModelVersion, relative_paths: list[str] | None = None) -> None:
    """Check artifacts against the sha256 in the metadata (all of them by default).

    Raises:
        ChecksumMismatch: an artifact is missing or its content differs.
    """
    recorded: dict[str, str] = model.metadata.get("sha256", {})
    for relative in relative_paths if relative_paths is not None else sorted(recorded):
        if relative not in recorded:
            raise ChecksumMismatch(
                f"model {model.ref} records no sha256 for {relative}"
            )
        path = model.path / relative
        if not path.is_file():
            raise ChecksumMismatch(f"model {model.ref} is missing its artifact {path}")
        actual = file_sha256(path)
        if actual != recorded[relative]:
            raise ChecksumMismatch(
                f"model {model.ref}: {path} has sha256 {actual}, "
                f"expected {recorded[relative]} from {METADATA_FILE}; "
                "a published model must not change"
            )
    logger.debug("verified %s", model.ref)


def ir_files(model: ModelVersion, precision: str = "int8") -> list[str]:
    """The relative paths of the ``.xml`` and ``.bin`` of an IR."""
    xml = model.ir_path(precision).relative_to(model.path)
    return [xml.as_posix(), xml.with_suffix(".bin").as_posix()]


@dataclass(frozen=True)
class ModelIdentity:
    """What the results database records as one model version."""

    name: str
    version: str
    precision: str
    sha256: str


def identity(model: ModelVersion, precision: str = "int8") -> ModelIdentity:
    """The identity of ``model``'s ``precision`` build: its IR weights' sha256."""
    weights = ir_files(model, precision)[1]
    return ModelIdentity(model.name, model.version, precision, model.sha256(weights))
