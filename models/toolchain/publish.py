"""Build every artifact of a trained run and publish it as a new model version.

One command does it all, in the toolchain environment (torch, Ultralytics, NNCF)::

    segbatch model publish --run /work/data/runs/shapes-seg-1 \\
        --data /work/data/shapes-v1 --name shapes-seg --version 1

That is :func:`build_and_publish`: the run's ``weights/best.pt`` is copied without
its optimizer state, exported to ONNX and to OpenVINO FP32 and FP16 IRs, quantized
to INT8 on the dataset's training images, evaluated on its validation split with
throughput measured, and assembled by :func:`publish` into
``models/<name>/<version>/`` beside a ``metadata.json`` that records the sha256 of
every file. ``models/README.md`` is then regenerated.

A version that exists is never overwritten: publishing it again is refused before
any work starts. The version folder is assembled under a temporary name and renamed
into place, so a failed publication leaves no half-written version behind.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

from segbatch import defaults
from segbatch.errors import ModelError
from segbatch.models import registry
from segbatch.models.toolchain.coco import read_class_names, read_yolo_split
from segbatch.models.toolchain.evaluate import Evaluation, evaluate_split
from segbatch.models.toolchain.export import (
    ULTRALYTICS_METADATA_FILE,
    ExportedModel,
    export_all,
)
from segbatch.models.toolchain.model_page import write_model_page
from segbatch.models.toolchain.quantize import (
    QuantizationSettings,
    quantize_int8,
    quantize_int8_with_accuracy_control,
)
from segbatch.models.toolchain.report import ReportFiles, write_report
from segbatch.models.toolchain.train import TrainRecipe

logger = logging.getLogger(__name__)

ARTIFACTS = {
    "int8": "int8/model.xml",
    "fp16": "fp16/model.xml",
    "onnx": "model.onnx",
    "pytorch": "model.pt",
}
DEFAULT_PRECISION = "int8"
TASK = "segment"
TOOLCHAIN_PACKAGES = ("ultralytics", "torch", "onnx", "openvino", "nncf")


@dataclass(frozen=True)
class BuiltModel:
    """Everything :func:`publish` assembles, still in a scratch folder."""

    weights: Path
    exported: ExportedModel
    int8_xml: Path
    report: ReportFiles
    evaluation: Evaluation
    recipe: TrainRecipe
    quantization: QuantizationSettings
    opset: int
    checkpoint_name: str
    epochs_completed: int | None


def build_and_publish(
    run_dir: Path,
    data_dir: Path,
    *,
    name: str,
    version: str,
    models_dir: Path,
    weights_name: str = "best.pt",
    calibration_source: str | None = None,
    calibration_images: int = defaults.CALIBRATION_IMAGES,
    accuracy_control: bool = False,
    max_drop_points: float = defaults.ACCURACY_CONTROL_MAX_DROP_POINTS,
    eval_limit: int | None = None,
    benchmark_duration_s: int = defaults.BENCHMARK_DURATION_S,
) -> registry.ModelVersion:
    """Export, quantize, evaluate and publish a training run as ``name/version``.

    Args:
        run_dir: the Ultralytics run folder (``args.yaml``, ``weights/``).
        data_dir: the dataset folder (``dataset.json``, ``images/``, ``labels/``).
        models_dir: the folder of model versions.
        weights_name: the checkpoint of ``run_dir/weights`` to publish.
        calibration_source: folder, manifest or ``s3://`` prefix of calibration
            images; the dataset's training images by default.
        accuracy_control: quantize with NNCF's accuracy control, validated on the
            first ``defaults.ACCURACY_CONTROL_VALIDATION_IMAGES`` validation images.
        eval_limit: evaluate on the first images of the validation split only.

    Raises:
        ModelError: the version exists already.
    """
    _refuse_existing(models_dir, name, version)
    with tempfile.TemporaryDirectory(prefix=f"segbatch-build-{name}-") as scratch:
        built = build(
            run_dir,
            data_dir,
            Path(scratch),
            title=f"{name}/{version}",
            weights_name=weights_name,
            calibration_source=calibration_source,
            calibration_images=calibration_images,
            accuracy_control=accuracy_control,
            max_drop_points=max_drop_points,
            eval_limit=eval_limit,
            benchmark_duration_s=benchmark_duration_s,
        )
        return publish(
            built, data_dir, name=name, version=version, models_dir=models_dir
        )


def build(
    run_dir: Path,
    data_dir: Path,
    work_dir: Path,
    *,
    title: str,
    weights_name: str = "best.pt",
    calibration_source: str | None = None,
    calibration_images: int = defaults.CALIBRATION_IMAGES,
    accuracy_control: bool = False,
    max_drop_points: float = defaults.ACCURACY_CONTROL_MAX_DROP_POINTS,
    eval_limit: int | None = None,
    benchmark_duration_s: int = defaults.BENCHMARK_DURATION_S,
) -> BuiltModel:
    """Make every artifact of a run in ``work_dir`` (see :func:`build_and_publish`)."""
    recipe = read_train_recipe(run_dir)
    weights = strip_weights(run_dir / "weights" / weights_name, work_dir / "model.pt")
    exported = export_all(weights, work_dir, imgsz=recipe.imgsz)

    source = calibration_source or str(data_dir / "images" / "train")
    if accuracy_control:
        validation = read_yolo_split(
            data_dir, "val", limit=defaults.ACCURACY_CONTROL_VALIDATION_IMAGES
        )
        int8_xml, quantization = quantize_int8_with_accuracy_control(
            exported.fp32_xml,
            work_dir / "int8",
            source,
            validation,
            max_drop_points=max_drop_points,
            subset_size=calibration_images,
        )
    else:
        int8_xml, quantization = quantize_int8(
            exported.fp32_xml, work_dir / "int8", source, subset_size=calibration_images
        )

    evaluation = evaluate_split(
        data_dir,
        irs={"fp16": exported.fp16_xml, "int8": int8_xml},
        weights=weights,
        limit=eval_limit,
        imgsz=recipe.imgsz,
        benchmark_irs={"fp32": exported.fp32_xml, "int8": int8_xml},
        benchmark_duration_s=benchmark_duration_s,
    )
    report = write_report(evaluation, work_dir / "report", title=title)
    return BuiltModel(
        weights=weights,
        exported=exported,
        int8_xml=int8_xml,
        report=report,
        evaluation=evaluation,
        recipe=recipe,
        quantization=quantization,
        opset=defaults.ONNX_OPSET,
        checkpoint_name=weights_name,
        epochs_completed=epochs_completed(run_dir),
    )


def read_train_recipe(run_dir: Path) -> TrainRecipe:
    """The :class:`TrainRecipe` of a run, from the ``args.yaml`` Ultralytics wrote."""
    import yaml

    args_path = run_dir / "args.yaml"
    try:
        args = yaml.safe_load(args_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(
            f"cannot read the training arguments {args_path}: {exc}"
        ) from exc
    values = {f.name: args[f.name] for f in fields(TrainRecipe) if f.name in args}
    start = str(args.get("model", TrainRecipe.architecture))
    if start.endswith(".pt"):
        values["initial_weights"] = start
        values["architecture"] = architecture_of(Path(start))
    else:
        values["architecture"] = start
    return TrainRecipe(**values)


def architecture_of(checkpoint: Path) -> str:
    """The architecture file an Ultralytics checkpoint's network was built from."""
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        architecture = saved["model"].yaml.get("yaml_file")
    except (OSError, KeyError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"cannot read the checkpoint {checkpoint}: {exc}") from exc
    if not architecture:
        raise ModelError(f"{checkpoint} does not name its architecture file")
    return Path(str(architecture)).name


def epochs_completed(run_dir: Path) -> int | None:
    """How many epochs the run finished: the rows of its ``results.csv``."""
    results = run_dir / "results.csv"
    if not results.is_file():
        return None
    rows = [line for line in results.read_text().splitlines()[1:] if line.strip()]
    return len(rows)


def strip_weights(checkpoint: Path, out_path: Path) -> Path:
    """Copy a checkpoint without its optimizer state (EMA weights, half precision)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.utils.torch_utils import strip_optimizer

    if not checkpoint.is_file():
        raise ModelError(f"expected a checkpoint at {checkpoint}, found none")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not strip_optimizer(checkpoint, str(out_path)):
        raise ModelError(f"{checkpoint} is not an Ultralytics checkpoint")
    return out_path


def publish(
    built: BuiltModel,
    data_dir: Path,
    *,
    name: str,
    version: str,
    models_dir: Path,
) -> registry.ModelVersion:
    """Assemble ``models_dir/name/version`` from built artifacts and verify it."""
    _refuse_existing(models_dir, name, version)
    target = models_dir / name / version
    staging = models_dir / name / f".{version}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)

    try:
        _copy_artifacts(built, staging)
        meta = _metadata(built, data_dir, staging, name=name, version=version)
        (staging / registry.METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _refuse_existing(models_dir, name, version)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    model = registry.resolve(f"{name}/{version}", models_dir)
    registry.verify(model)
    write_model_page(models_dir)
    logger.info("published %s in %s", model.ref, target)
    return model


def _refuse_existing(models_dir: Path, name: str, version: str) -> None:
    target = models_dir / name / version
    if target.exists():
        raise ModelError(
            f"model {name}/{version} exists already in {target}; a published version "
            "never changes, publish a new version instead"
        )


def _copy_artifacts(built: BuiltModel, staging: Path) -> None:
    staging.mkdir(parents=True)
    shutil.copyfile(built.weights, staging / ARTIFACTS["pytorch"])
    shutil.copyfile(built.exported.onnx, staging / ARTIFACTS["onnx"])
    for precision, xml_path in (
        ("fp16", built.exported.fp16_xml),
        ("int8", built.int8_xml),
    ):
        folder = staging / precision
        folder.mkdir()
        for source in (
            xml_path,
            xml_path.with_suffix(".bin"),
            xml_path.parent / ULTRALYTICS_METADATA_FILE,
        ):
            shutil.copyfile(source, folder / source.name)
    shutil.copyfile(built.report.markdown, staging / built.report.markdown.name)
    shutil.copyfile(built.report.chart, staging / built.report.chart.name)


def _metadata(
    built: BuiltModel, data_dir: Path, staging: Path, *, name: str, version: str
) -> dict[str, Any]:
    class_names = list(read_class_names(data_dir))
    model_names = _model_class_names(built.exported.fp16_xml.parent)
    if model_names != class_names:
        raise ModelError(
            f"the model's classes {model_names} differ from the dataset's "
            f"{class_names} in {data_dir}"
        )
    dataset = json.loads((data_dir / "dataset.json").read_text())
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    return {
        "name": name,
        "version": version,
        "architecture": built.recipe.architecture.removesuffix(".yaml"),
        "task": TASK,
        "input_size_hw": list(built.evaluation.input_size_hw),
        "class_names": class_names,
        "precision": DEFAULT_PRECISION,
        "artifacts": dict(ARTIFACTS),
        "sha256": {
            p.relative_to(staging).as_posix(): registry.file_sha256(p) for p in files
        },
        "dataset": {
            "version": dataset.get("dataset_version"),
            "seed": dataset.get("seed"),
            "train": dataset.get("train"),
            "val": dataset.get("val"),
        },
        "recipe": {
            "train": {
                **built.recipe.as_dict(),
                "checkpoint": built.checkpoint_name,
                "epochs_completed": built.epochs_completed,
            },
            "export": {"onnx_opset": built.opset, "input": "static"},
            "quantization": built.quantization.as_dict(),
        },
        "evaluation": built.evaluation.as_dict(),
        "toolchain": _toolchain_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _model_class_names(ir_dir: Path) -> list[str]:
    """Class names in index order from an IR folder's Ultralytics metadata."""
    import yaml

    meta = yaml.safe_load((ir_dir / ULTRALYTICS_METADATA_FILE).read_text())
    names = meta["names"]
    if isinstance(names, str):
        names = ast.literal_eval(names)
    return [str(names[index]) for index in sorted(names)]


def _toolchain_versions() -> dict[str, str]:
    versions = {}
    for package in TOOLCHAIN_PACKAGES:
        try:
            versions[package] = package_metadata.version(package)
        except package_metadata.PackageNotFoundError:
            continue
    return versions
