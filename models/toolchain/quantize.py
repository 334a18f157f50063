"""Post-training INT8 quantization of the FP32 IR with NNCF.

Calibration images are read from a local folder, a manifest or an S3 prefix (the
first ``subset_size`` images in listing order), decoded and letterboxed exactly as
the workers do, so the ranges NNCF sets are those of real inputs.

The ``MIXED`` preset is used: symmetric weights, asymmetric activations. The tail of
the segmentation head stays in floating point, as Ultralytics keeps it in its own
INT8 exports: the distribution-focal-loss box decoding, the anchor and stride
arithmetic, the class sigmoid and the concatenations that assemble the output.
These hold coordinates up to the input size beside probabilities near zero; one
INT8 range for both would ruin one or the other. The head's convolution branches
(box, class and mask-coefficient convolutions, and the prototype network) are
quantized like the rest of the network.

Two modes:

- :func:`quantize_int8`: plain post-training quantization.
- :func:`quantize_int8_with_accuracy_control`: NNCF's accuracy-aware variant, which
  returns layers to floating point, the most harmful first, until the mask
  mAP50-95 on a validation subset is within ``max_drop_points`` of the FP32 model's.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segbatch import defaults
from segbatch.models.toolchain.coco import GroundTruth, score
from segbatch.models.toolchain.export import (
    IR_FILE,
    ULTRALYTICS_METADATA_FILE,
    ir_size_bytes,
)
from segbatch.models.toolchain.predict import CompiledSegmenter, predict_openvino

logger = logging.getLogger(__name__)

# Ops named ``/model.<i>/...``: the head is the module with the highest index.
_MODULE_NAME = re.compile(r"^/model\.(\d+)/")
# Branches of the head that stay quantized: its convolutions and prototype network.
_QUANTIZED_HEAD_BRANCHES = ("cv2.", "cv3.", "cv4.", "proto/")
_SKIPPED_TYPES = frozenset({"Constant", "Parameter", "Result"})


@dataclass(frozen=True)
class QuantizationSettings:
    """How an INT8 IR was made, recorded in the model metadata."""

    tool: str
    preset: str
    calibration_source: str
    calibration_images: int
    float_head_ops: int
    accuracy_control: bool = False
    max_drop_points: float | None = None
    validation_images: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def head_ignored_scope(model: Any) -> Any:
    """An ``nncf.IgnoredScope`` holding the float tail of the segmentation head."""
    import nncf

    return nncf.IgnoredScope(names=float_head_op_names(model))


def _computes(op: Any) -> bool:
    """Whether an op works on activations (not a constant, nor a conversion of one
    such as an FP16 IR's weight decompression)."""
    if op.get_type_name() in _SKIPPED_TYPES:
        return False
    return any(
        value.get_node().get_type_name() != "Constant" for value in op.input_values()
    )


def float_head_op_names(model: Any) -> list[str]:
    """Names of the ops of the head's decoding tail, and the ops that use them to
    make a model output (the final concatenation)."""
    ops = [op for op in model.get_ordered_ops() if _computes(op)]
    indices = [
        int(m.group(1))
        for op in ops
        if (m := _MODULE_NAME.match(op.get_friendly_name()))
    ]
    if not indices:
        raise ValueError(
            "expected op names like '/model.<index>/...' from an Ultralytics ONNX "
            "export; found none, so the head cannot be found"
        )
    head = f"/model.{max(indices)}/"

    names = [
        op.get_friendly_name()
        for op in ops
        if op.get_friendly_name().startswith(head)
        and not op.get_friendly_name()
        .removeprefix(head)
        .startswith(_QUANTIZED_HEAD_BRANCHES)
    ]
    tail = set(names)
    for op in ops:
        feeds_output = any(
            target.get_node().get_type_name() == "Result"
            for output in op.outputs()
            for target in output.get_target_inputs()
        )
        sources = {value.get_node().get_friendly_name() for value in op.input_values()}
        if feeds_output and sources & tail and op.get_friendly_name() not in tail:
            names.append(op.get_friendly_name())
    logger.debug("keeping %d head ops in floating point: %s", len(names), names)
    return names


def calibration_uris(source: str, count: int) -> list[str]:
    """The first ``count`` image URIs of a folder, manifest or ``s3://`` prefix."""
    from segbatch.producer.listing import iter_image_uris

    uris = [info.uri for info in itertools.islice(iter_image_uris(source), count)]
    if not uris:
        raise ValueError(f"expected calibration images in {source!r}, found none")
    if len(uris) < count:
        logger.warning(
            "only %d calibration images in %s (%d asked)", len(uris), source, count
        )
    return uris


def letterboxed_input(uri: str, input_size_hw: tuple[int, int]) -> np.ndarray:
    """The ``(1, 3, H, W)`` model input of the image at ``uri``, as workers make it."""
    from segbatch.storage import read_object
    from segbatch.workers.decode import decode_image
    from segbatch.workers.letterbox import letterbox

    image_rgb = decode_image(read_object(uri).data, name=uri)
    tensor_nchw, _ = letterbox(image_rgb, input_size_hw)
    return tensor_nchw


def _read_fp32(fp32_xml: Path) -> tuple[Any, tuple[int, int]]:
    """The FP32 model and the ``(H, W)`` its calibration inputs are letterboxed to:
    its static input size, or for a dynamic IR the export size in its metadata."""
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    shape = model.input(0).get_partial_shape()
    if not (shape[2].is_dynamic or shape[3].is_dynamic):
        return model, (int(shape[2].get_length()), int(shape[3].get_length()))
    return model, _exported_size_hw(fp32_xml.parent)


def _exported_size_hw(ir_dir: Path) -> tuple[int, int]:
    import ast

    import yaml

    metadata_path = ir_dir / ULTRALYTICS_METADATA_FILE
    try:
        imgsz = yaml.safe_load(metadata_path.read_text())["imgsz"]
        height, width = ast.literal_eval(imgsz) if isinstance(imgsz, str) else imgsz
    except (OSError, KeyError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(
            f"the IR in {ir_dir} has a dynamic input; expected its export size "
            f"as 'imgsz' in {metadata_path}: {exc}"
        ) from exc
    return int(height), int(width)


def quantize_int8(
    fp32_xml: Path,
    out_dir: Path,
    calibration_source: str,
    *,
    subset_size: int = defaults.CALIBRATION_IMAGES,
) -> tuple[Path, QuantizationSettings]:
    """Quantize an FP32 IR to ``out_dir/model.xml`` with NNCF's MIXED preset."""
    import nncf

    model, input_size_hw = _read_fp32(fp32_xml)
    uris = calibration_uris(calibration_source, subset_size)
    calibration = nncf.Dataset(
        uris, partial(letterboxed_input, input_size_hw=input_size_hw)
    )
    ignored = float_head_op_names(model)

    logger.info(
        "quantizing %s on %d images from %s", fp32_xml, len(uris), calibration_source
    )
    quantized = nncf.quantize(
        model,
        calibration,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(uris),
        ignored_scope=nncf.IgnoredScope(names=ignored),
    )
    xml_path = _save(quantized, fp32_xml, out_dir)
    return xml_path, QuantizationSettings(
        tool=f"nncf {nncf.__version__}",
        preset="mixed",
        calibration_source=calibration_source,
        calibration_images=len(uris),
        float_head_ops=len(ignored),
    )


def quantize_int8_with_accuracy_control(
    fp32_xml: Path,
    out_dir: Path,
    calibration_source: str,
    validation: GroundTruth,
    *,
    max_drop_points: float = defaults.ACCURACY_CONTROL_MAX_DROP_POINTS,
    subset_size: int = defaults.CALIBRATION_IMAGES,
) -> tuple[Path, QuantizationSettings]:
    """Quantize as :func:`quantize_int8`, then restore floating-point layers until
    the mask mAP50-95 on ``validation`` drops by at most ``max_drop_points``
    (percentage points) from the FP32 IR's."""
    import nncf

    model, input_size_hw = _read_fp32(fp32_xml)
    uris = calibration_uris(calibration_source, subset_size)
    calibration = nncf.Dataset(
        uris, partial(letterboxed_input, input_size_hw=input_size_hw)
    )
    validation_set = nncf.Dataset(
        [image.image_id for image in validation.images],
        _letterboxed_image_id(validation, input_size_hw),
    )
    ignored = float_head_op_names(model)

    def mask_map(compiled_model: Any, image_ids: Iterable[int]) -> float:
        segmenter = CompiledSegmenter(compiled_model, input_size_hw)
        ids = list(image_ids)
        predictions = predict_openvino(segmenter, validation, image_ids=ids)
        return score(validation.select(ids), predictions)["mask"]["map50_95"]

    logger.info(
        "quantizing %s with accuracy control: at most %.2f mask mAP points lost "
        "on %d images",
        fp32_xml,
        max_drop_points,
        len(validation.images),
    )
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=calibration,
        validation_dataset=validation_set,
        validation_fn=mask_map,
        max_drop=max_drop_points / 100,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(uris),
        ignored_scope=nncf.IgnoredScope(names=ignored),
    )
    xml_path = _save(quantized, fp32_xml, out_dir)
    return xml_path, QuantizationSettings(
        tool=f"nncf {nncf.__version__}",
        preset="mixed",
        calibration_source=calibration_source,
        calibration_images=len(uris),
        float_head_ops=len(ignored),
        accuracy_control=True,
        max_drop_points=max_drop_points,
        validation_images=len(validation.images),
    )


def _letterboxed_image_id(truth: GroundTruth, input_size_hw: tuple[int, int]):
    uris = {image.image_id: str(image.path) for image in truth.images}

    def transform(image_id: int) -> np.ndarray:
        return letterboxed_input(uris[image_id], input_size_hw)

    return transform


def _save(quantized: Any, fp32_xml: Path, out_dir: Path) -> Path:
    import openvino as ov

    out_dir.mkdir(parents=True, exist_ok=True)
    xml_path = out_dir / IR_FILE
    ov.save_model(quantized, str(xml_path), compress_to_fp16=False)
    metadata = fp32_xml.parent / ULTRALYTICS_METADATA_FILE
    if metadata.exists():
        (out_dir / ULTRALYTICS_METADATA_FILE).write_bytes(metadata.read_bytes())

    size = ir_size_bytes(xml_path)
    logger.info("wrote INT8 IR %s (%.2f MB)", xml_path, size / 1e6)
    if size > defaults.MAX_INT8_IR_BYTES:
        raise ValueError(
            f"expected the INT8 IR to take at most {defaults.MAX_INT8_IR_BYTES} bytes, "
            f"{xml_path} and its .bin take {size}"
        )
    return xml_path
