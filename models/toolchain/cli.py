"""``segbatch model ...``: make, evaluate, publish and check model versions.

``dataset``, ``train``, ``export``, ``quantize``, ``evaluate`` and ``publish`` need
the toolchain environment (the ``train`` extra); ``list``, ``verify`` and ``page``
run anywhere. Each command imports what it needs when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segbatch import defaults

model_app = typer.Typer(
    no_args_is_help=True,
    help="Make, evaluate, publish and check model versions.",
)

ModelsDir = Annotated[
    Path | None,
    typer.Option(help="Folder of model versions (env SEGBATCH_MODELS_DIR)."),
]
DataDir = Annotated[
    Path,
    typer.Option(
        "--data", help="Dataset folder: dataset.json, images/<split>, labels/<split>."
    ),
]
ImageSize = Annotated[int, typer.Option(help="Square model input size, pixels.")]


def _models_dir(models_dir: Path | None) -> Path:
    from segbatch.config import load_settings

    return models_dir if models_dir is not None else load_settings().models_dir


@model_app.command()
def dataset(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset to.")],
    train: Annotated[int, typer.Option(help="Training images.")] = 1200,
    val: Annotated[int, typer.Option(help="Validation images.")] = 200,
    seed: Annotated[int | None, typer.Option(help="Generator seed.")] = None,
) -> None:
    """Write the synthetic shapes dataset (YOLO segmentation layout)."""
    from segbatch.models.toolchain.dataset import DEFAULT_SEED, write_dataset

    data_yaml = write_dataset(
        out_dir,
        train_count=train,
        val_count=val,
        seed=DEFAULT_SEED if seed is None else seed,
    )
    print(data_yaml)


@model_app.command()
def train(
    data_yaml: Annotated[Path, typer.Argument(help="The dataset's data.yaml.")],
    run_dir: Annotated[Path, typer.Argument(help="Run folder; resumed if it exists.")],
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 60,
    imgsz: ImageSize = 320,
    batch: Annotated[int, typer.Option(help="Images per step.")] = 16,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    close_mosaic: Annotated[
        int, typer.Option(help="Final epochs trained without mosaic.")
    ] = 10,
    init_weights: Annotated[
        Path | None,
        typer.Option(help="Start from this checkpoint instead of random weights."),
    ] = None,
) -> None:
    """Train a YOLO segmentation model from scratch, offline (or resume a run)."""
    from segbatch.models.toolchain.train import TrainRecipe
    from segbatch.models.toolchain.train import train as train_run

    recipe = TrainRecipe(
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        seed=seed,
        close_mosaic=close_mosaic,
        initial_weights=None if init_weights is None else str(init_weights),
    )
    print(train_run(data_yaml, run_dir, recipe))


@model_app.command()
def export(
    weights: Annotated[Path, typer.Argument(help="PyTorch checkpoint (.pt).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the exported files.")],
    imgsz: ImageSize = 320,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = defaults.ONNX_OPSET,
    dynamic: Annotated[
        bool, typer.Option(help="Dynamic batch and image size instead of 1x3xHxW.")
    ] = False,
) -> None:
    """Export weights to model.onnx and OpenVINO fp32/ and fp16/ IRs."""
    from segbatch.models.toolchain.export import export_all

    exported = export_all(weights, out_dir, imgsz=imgsz, opset=opset, dynamic=dynamic)
    for path in (exported.onnx, exported.fp32_xml, exported.fp16_xml):
        print(path)


@model_app.command()
def quantize(
    fp32_xml: Annotated[Path, typer.Argument(help="The FP32 IR (model.xml).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the INT8 IR.")],
    calibration: Annotated[
        str,
        typer.Option(help="Calibration images: a folder, manifest or s3:// prefix."),
    ],
    images: Annotated[
        int, typer.Option(help="Calibration images used (the first ones listed).")
    ] = defaults.CALIBRATION_IMAGES,
    accuracy_control: Annotated[
        bool,
        typer.Option(help="Restore float layers until the mask mAP drop is within."),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset whose val split validates accuracy control."),
    ] = None,
    max_drop: Annotated[
        float, typer.Option(help="Mask mAP50-95 points INT8 may lose.")
    ] = defaults.ACCURACY_CONTROL_MAX_DROP_POINTS,
    validation_images: Annotated[
        int, typer.Option(help="Validation images for accuracy control.")
    ] = defaults.ACCURACY_CONTROL_VALIDATION_IMAGES,
) -> None:
    """Quantize an FP32 IR to INT8 with NNCF (MIXED preset, float head tail)."""
    from segbatch.models.toolchain import quantize as quantization

    if not accuracy_control:
        xml_path, _ = quantization.quantize_int8(
            fp32_xml, out_dir, calibration, subset_size=images
        )
    else:
        if data is None:
            raise typer.BadParameter("--accuracy-control needs --data")
        from segbatch.models.toolchain.coco import read_yolo_split

        xml_path, _ = quantization.quantize_int8_with_accuracy_control(
            fp32_xml,
            out_dir,
            calibration,
            read_yolo_split(data, "val", limit=validation_images),
            max_drop_points=max_drop,
            subset_size=images,
        )
    print(xml_path)


@model_app.command()
def evaluate(
    data: DataDir,
    out_dir: Annotated[Path, typer.Option(help="Folder for the report.")],
    weights: Annotated[
        Path | None, typer.Option(help="PyTorch checkpoint, the reference.")
    ] = None,
    fp16: Annotated[Path | None, typer.Option(help="FP16 IR (model.xml).")] = None,
    int8: Annotated[Path | None, typer.Option(help="INT8 IR (model.xml).")] = None,
    fp32: Annotated[
        Path | None, typer.Option(help="FP32 IR, benchmarked against the INT8 one.")
    ] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "val",
    limit: Annotated[
        int | None, typer.Option(help="Evaluate the first images only.")
    ] = None,
    imgsz: ImageSize = 320,
    benchmark_s: Annotated[
        int, typer.Option(help="Seconds of benchmark_app per IR; 0 skips it.")
    ] = defaults.BENCHMARK_DURATION_S,
) -> None:
    """Score the given variants on a labelled split; write report.md and a chart."""
    from segbatch.models.toolchain.evaluate import evaluate_split
    from segbatch.models.toolchain.report import write_report

    irs = {label: xml for label, xml in (("fp16", fp16), ("int8", int8)) if xml}
    if not irs and weights is None:
        raise typer.BadParameter("give --weights, --fp16 or --int8")
    benchmark_irs = None
    if benchmark_s > 0:
        pairs = (("fp32", fp32), ("int8", int8))
        benchmark_irs = {label: xml for label, xml in pairs if xml} or None

    evaluation = evaluate_split(
        data,
        irs=irs,
        weights=weights,
        split=split,
        limit=limit,
        imgsz=imgsz,
        benchmark_irs=benchmark_irs,
        benchmark_duration_s=benchmark_s,
    )
    files = write_report(evaluation, out_dir, title=f"Evaluation on {data.name}")
    print(files.markdown)


@model_app.command()
def publish(
    run: Annotated[Path, typer.Option(help="The training run folder.")],
    data: DataDir,
    name: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[str, typer.Option(help="New version; never overwritten.")],
    models_dir: ModelsDir = None,
    weights: Annotated[
        str, typer.Option(help="Checkpoint in the run's weights/ folder.")
    ] = "best.pt",
    calibration: Annotated[
        str | None,
        typer.Option(help="Calibration images; the dataset's train split by default."),
    ] = None,
    accuracy_control: Annotated[
        bool, typer.Option(help="Quantize with NNCF's accuracy control.")
    ] = False,
    max_drop: Annotated[
        float, typer.Option(help="Mask mAP50-95 points INT8 may lose.")
    ] = defaults.ACCURACY_CONTROL_MAX_DROP_POINTS,
    eval_limit: Annotated[
        int | None, typer.Option(help="Evaluate on the first val images only.")
    ] = None,
    benchmark_s: Annotated[
        int, typer.Option(help="Seconds of benchmark_app per IR.")
    ] = defaults.BENCHMARK_DURATION_S,
) -> None:
    """Export, quantize, evaluate and publish a run as models/NAME/VERSION."""
    from segbatch.models.toolchain.publish import build_and_publish

    model = build_and_publish(
        run,
        data,
        name=name,
        version=version,
        models_dir=_models_dir(models_dir),
        weights_name=weights,
        calibration_source=calibration,
        accuracy_control=accuracy_control,
        max_drop_points=max_drop,
        eval_limit=eval_limit,
        benchmark_duration_s=benchmark_s,
    )
    print(model.path)


@model_app.command("list")
def list_versions(models_dir: ModelsDir = None) -> None:
    """List the published versions with their main figures."""
    from rich.console import Console
    from rich.table import Table

    from segbatch.models import registry

    folder = _models_dir(models_dir)
    table = Table("model", "precision", "input", "mask mAP50-95", "box mAP50-95")
    for ref in registry.available(folder):
        meta = registry.resolve(ref, folder).metadata
        figures = meta.get("evaluation", {}).get("figures", {})
        default = figures.get(meta.get("precision", ""), {})
        height, width = meta["input_size_hw"]
        table.add_row(
            ref,
            str(meta.get("precision")),
            f"{height}x{width}",
            _percent(default.get("mask", {}).get("map50_95")),
            _percent(default.get("box", {}).get("map50_95")),
        )
    Console().print(table)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


@model_app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="Model as name/version.")],
    models_dir: ModelsDir = None,
) -> None:
    """Check every artifact of a version against its recorded sha256."""
    from segbatch.models import registry

    model = registry.resolve(ref, _models_dir(models_dir))
    registry.verify(model)
    print(f"{model.ref}: {len(model.metadata['sha256'])} artifacts verified")


@model_app.command()
def page(models_dir: ModelsDir = None) -> None:
    """Regenerate models/README.md from every version's metadata."""
    from segbatch.models.toolchain.model_page import write_model_page

    print(write_model_page(_models_dir(models_dir)))
