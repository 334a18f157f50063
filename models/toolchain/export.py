"""Trained PyTorch weights to ONNX and to OpenVINO IR in FP32 and FP16.

The ONNX graph is made by Ultralytics' exporter (opset pinned, batch 1, a static
``1x3xHxW`` input unless ``dynamic``) and is the single source of both IRs:
``openvino.convert_model`` reads it and ``openvino.save_model`` writes FP32 weights
or weights compressed to FP16. Each IR folder also gets Ultralytics'
``metadata.yaml`` (the ONNX file's metadata, verbatim), so that
Ultralytics can load it next to our own pipeline (through
:func:`ultralytics_ir_dir`, since Ultralytics recognises an IR folder by its name).

Torch and Ultralytics are imported inside :func:`export_onnx` only; turning an ONNX
file into IR needs OpenVINO alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segbatch import defaults

logger = logging.getLogger(__name__)

IR_FILE = "model.xml"
ULTRALYTICS_METADATA_FILE = "metadata.yaml"


@dataclass(frozen=True)
class ExportedModel:
    """The files one export writes."""

    onnx: Path
    fp32_xml: Path
    fp16_xml: Path


def export_all(
    weights: Path,
    out_dir: Path,
    *,
    imgsz: int,
    opset: int = defaults.ONNX_OPSET,
    dynamic: bool = False,
) -> ExportedModel:
    """Export ``weights`` to ``model.onnx``, ``fp32/model.xml`` and ``fp16/model.xml``
    in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(
        weights, out_dir / "model.onnx", imgsz=imgsz, opset=opset, dynamic=dynamic
    )
    return ExportedModel(
        onnx=onnx_path,
        fp32_xml=onnx_to_ir(onnx_path, out_dir / "fp32", compress_to_fp16=False),
        fp16_xml=onnx_to_ir(onnx_path, out_dir / "fp16", compress_to_fp16=True),
    )


def export_onnx(
    weights: Path,
    onnx_path: Path,
    *,
    imgsz: int,
    opset: int = defaults.ONNX_OPSET,
    dynamic: bool = False,
) -> Path:
    """Export a YOLO segmentation checkpoint to ONNX at ``onnx_path``.

    The exporter writes next to the weights it reads, so it works on a copy in a
    scratch folder: the run folder of a training is never written to.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # the toolchain extra; workers never import this

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segbatch-export-") as scratch:
        local_weights = Path(scratch) / "model.pt"
        shutil.copyfile(weights, local_weights)
        exported = YOLO(str(local_weights)).export(
            format="onnx",
            imgsz=imgsz,
            opset=opset,
            dynamic=dynamic,
            simplify=True,
            batch=1,
            device="cpu",
            verbose=False,
        )
        shutil.move(str(exported), onnx_path)

    logger.info(
        "exported %s to %s (opset %d, %s input)",
        weights,
        onnx_path,
        opset,
        "dynamic" if dynamic else f"static 1x3x{imgsz}x{imgsz}",
    )
    return onnx_path


def onnx_to_ir(onnx_path: Path, ir_dir: Path, *, compress_to_fp16: bool) -> Path:
    """Convert an ONNX file to an OpenVINO IR in ``ir_dir``; return its ``.xml``."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    ir_dir.mkdir(parents=True, exist_ok=True)
    xml_path = ir_dir / IR_FILE
    ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    write_ultralytics_metadata(onnx_path, ir_dir)
    logger.info("wrote %s IR %s", "FP16" if compress_to_fp16 else "FP32", xml_path)
    return xml_path


def write_ultralytics_metadata(onnx_path: Path, ir_dir: Path) -> Path:
    """Copy the metadata Ultralytics embedded in an ONNX file to ``metadata.yaml``.

    Values stay the strings the ONNX file holds; Ultralytics parses them the same
    way whichever of the two files it reads them from.
    """
    import onnx
    import yaml

    model = onnx.load(str(onnx_path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if not metadata:
        raise ValueError(
            f"expected Ultralytics metadata in {onnx_path}, found no metadata_props"
        )
    path = ir_dir / ULTRALYTICS_METADATA_FILE
    path.write_text(yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True))
    return path


def ir_size_bytes(xml_path: Path) -> int:
    """The bytes of an IR on disk: its ``.xml`` and ``.bin`` together."""
    return xml_path.stat().st_size + xml_path.with_suffix(".bin").stat().st_size


@contextmanager
def ultralytics_ir_dir(ir_dir: Path) -> Iterator[Path]:
    """A temporary link to ``ir_dir`` named as ``ultralytics.YOLO`` expects an IR.

    Ultralytics tells formats apart by name and takes a folder for OpenVINO only
    when its name ends in ``_openvino_model``.
    """
    with tempfile.TemporaryDirectory(prefix="segbatch-ir-") as scratch:
        link = Path(scratch) / f"{ir_dir.name}_openvino_model"
        link.symlink_to(ir_dir.resolve(), target_is_directory=True)
        yield link
