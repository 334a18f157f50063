"""Model versions whose OpenVINO IR has the interface of a YOLO segmentation export.

The graph returns fixed outputs, a prediction ``(1, 4 + nc + nm, anchors)`` and
prototypes ``(1, nm, mh, mw)``, whatever image it is given (the input enters the
outputs multiplied by zero), so a test knows every detection in advance. Input and
output shapes are chosen freely: static or dynamic, any size and class count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from segbatch.models import registry
from segbatch.models.registry import ModelVersion


def anchor(
    box_xywh: tuple[float, float, float, float],
    class_scores: Sequence[float],
    coefficients: Sequence[float],
) -> np.ndarray:
    """One column of a prediction: box, class scores, mask coefficients."""
    return np.array([*box_xywh, *class_scores, *coefficients], np.float32)


def write_fake_model(
    models_dir: Path,
    prediction_ca: np.ndarray,
    protos_chw: np.ndarray,
    *,
    class_names: Sequence[str],
    input_shape: Sequence[int] = (1, 3, 320, 320),
    input_size_hw: tuple[int, int] = (320, 320),
    name: str = "fake-seg",
    version: str = "1",
) -> ModelVersion:
    """Write ``models_dir/name/version`` with an INT8-named IR and its metadata.

    ``-1`` in ``input_shape`` is a dynamic dimension.
    """
    image = ops.parameter(
        ov.PartialShape([ov.Dimension() if d < 0 else d for d in input_shape]),
        ov.Type.f32,
        name="images",
    )
    nothing = ops.multiply(
        ops.reduce_sum(image, ops.constant(np.array([0, 1, 2, 3], np.int64)), False),
        ops.constant(np.float32(0)),
    )
    prediction = ops.add(ops.constant(prediction_ca[None].astype(np.float32)), nothing)
    protos = ops.add(ops.constant(protos_chw[None].astype(np.float32)), nothing)
    model = ov.Model([prediction, protos], [image], "fake-yolo-seg")

    root = models_dir / name / version
    xml_path = root / "int8" / "model.xml"
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, xml_path, compress_to_fp16=False)

    files = ["int8/model.xml", "int8/model.bin"]
    metadata = {
        "name": name,
        "version": version,
        "input_size_hw": list(input_size_hw),
        "class_names": list(class_names),
        "artifacts": {"int8": "int8/model.xml"},
        "sha256": {f: registry.file_sha256(root / f) for f in files},
    }
    (root / registry.METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return registry.resolve(f"{name}/{version}", models_dir)
