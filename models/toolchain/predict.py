"""Predictions of each model variant on a labelled split, in one comparable form.

OpenVINO IRs run through the workers' own steps (``decode_image``, the letterbox,
``postprocess``) with a compiled model, so the figures are those of what the
workers run, up to the masks: the final polygon simplification is left out. That
path needs no torch. The PyTorch weights run through Ultralytics' ``predict`` with
``retina_masks=True`` (masks at the original resolution), which is what a PyTorch
user of the weights gets.

Each prediction is kept as a :class:`~segbatch.models.toolchain.coco.ScoredInstance`
with its mask RLE-encoded at once, so memory stays small whatever the image size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segbatch import defaults
from segbatch.errors import ModelError
from segbatch.models.toolchain.coco import GroundTruth, ScoredInstance, mask_to_rle

logger = logging.getLogger(__name__)

Predictions = dict[int, list[ScoredInstance]]


def load_rgb(path: Path) -> np.ndarray:
    """An image file decoded as the workers decode it: ``(H, W, 3)`` uint8 RGB."""
    from segbatch.workers.decode import decode_image

    return decode_image(path.read_bytes(), name=str(path))


def compile_ir(xml_path: Path, device: str = "CPU") -> Any:
    """Read and compile an OpenVINO IR for synchronous inference."""
    import openvino as ov

    try:
        core = ov.Core()
        return core.compile_model(core.read_model(str(xml_path)), device)
    except RuntimeError as exc:
        raise ModelError(f"cannot compile the OpenVINO IR {xml_path}: {exc}") from exc


class CompiledSegmenter:
    """Runs one compiled YOLO segmentation IR on single images, as the workers do."""

    def __init__(self, compiled_model: Any, input_size_hw: tuple[int, int]) -> None:
        from segbatch.workers.letterbox import Letterboxer

        self.compiled_model = compiled_model
        self.request = compiled_model.create_infer_request()
        self.letterboxer = Letterboxer(input_size_hw)

    @classmethod
    def from_ir(cls, xml_path: Path, input_size_hw: tuple[int, int] | None = None):
        """Compile ``xml_path``; a static IR's own input size is used when not given."""
        compiled = compile_ir(xml_path)
        return cls(compiled, input_size_hw or static_input_size_hw(compiled))

    def __call__(
        self,
        image_rgb: np.ndarray,
        *,
        confidence: float = defaults.EVAL_CONFIDENCE,
        max_det: int = defaults.EVAL_MAX_DETECTIONS,
    ) -> list[ScoredInstance]:
        from segbatch.workers.postprocess import postprocess

        tensor_nchw, geometry = self.letterboxer(image_rgb)
        outputs = self.request.infer({0: tensor_nchw})
        prediction, protos = _split_outputs(list(outputs.values()))
        num_classes = prediction.shape[1] - 4 - protos.shape[1]
        segmentation = postprocess(
            prediction[0],
            protos[0],
            geometry,
            num_classes=num_classes,
            confidence=confidence,
            max_det=max_det,
        )

        size_hw = image_rgb.shape[:2]
        return [
            ScoredInstance(
                class_id=int(class_id),
                score=float(score),
                box_xyxy=tuple(float(v) for v in box),  # type: ignore[arg-type]
                mask_rle=mask_to_rle(crop.paste(size_hw)),
            )
            for box, score, class_id, crop in zip(
                segmentation.boxes_xyxy,
                segmentation.scores,
                segmentation.class_ids,
                segmentation.masks,
                strict=True,
            )
        ]


def static_input_size_hw(compiled_model: Any) -> tuple[int, int]:
    """The ``(H, W)`` of a compiled model's static ``1x3xHxW`` input."""
    shape = compiled_model.input(0).get_partial_shape()
    if shape.is_dynamic:
        raise ModelError(
            f"expected a static 1x3xHxW input, got {shape}; give the input size"
        )
    return int(shape[2].get_length()), int(shape[3].get_length())


def _split_outputs(outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ``(1, 4+nc+nm, anchors)`` prediction and the ``(1, nm, h, w)`` prototypes."""
    by_rank = {output.ndim: output for output in outputs}
    if len(outputs) != 2 or set(by_rank) != {3, 4}:
        shapes = [output.shape for output in outputs]
        raise ModelError(
            "expected a YOLO segmentation model with a 3-D prediction and 4-D "
            f"prototypes output, got outputs of shapes {shapes}"
        )
    return by_rank[3], by_rank[4]


def predict_openvino(
    segmenter: CompiledSegmenter,
    truth: GroundTruth,
    *,
    image_ids: Iterable[int] | None = None,
    confidence: float = defaults.EVAL_CONFIDENCE,
    max_det: int = defaults.EVAL_MAX_DETECTIONS,
) -> Predictions:
    """Predictions of a compiled IR for the images of ``truth`` (or some of them)."""
    wanted = None if image_ids is None else set(image_ids)
    predictions: Predictions = {}
    for image in truth.images:
        if wanted is not None and image.image_id not in wanted:
            continue
        predictions[image.image_id] = segmenter(
            load_rgb(image.path), confidence=confidence, max_det=max_det
        )
    return predictions


def predict_pytorch(
    weights: Path,
    truth: GroundTruth,
    *,
    imgsz: int,
    confidence: float = defaults.EVAL_CONFIDENCE,
    max_det: int = defaults.EVAL_MAX_DETECTIONS,
) -> Predictions:
    """Predictions of the PyTorch weights through Ultralytics' ``predict``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # the toolchain extra; workers never import this

    model = YOLO(str(weights))
    predictions: Predictions = {}
    for image in truth.images:
        result = model.predict(
            str(image.path),
            imgsz=imgsz,
            conf=confidence,
            iou=defaults.IOU_THRESHOLD,
            max_det=max_det,
            retina_masks=True,
            device="cpu",
            verbose=False,
        )[0]
        predictions[image.image_id] = _ultralytics_instances(result)
    return predictions


def _ultralytics_instances(result: Any) -> list[ScoredInstance]:
    if result.masks is None or len(result.boxes) == 0:
        return []
    masks_nhw = result.masks.data.cpu().numpy() > 0.5
    boxes_xyxy = result.boxes.xyxy.cpu().numpy()
    scores = result.boxes.conf.cpu().numpy()
    class_ids = result.boxes.cls.cpu().numpy().astype(int)
    return [
        ScoredInstance(
            class_id=int(class_id),
            score=float(score),
            box_xyxy=tuple(float(v) for v in box),  # type: ignore[arg-type]
            mask_rle=mask_to_rle(mask),
        )
        for box, score, class_id, mask in zip(
            boxes_xyxy, scores, class_ids, masks_nhw, strict=True
        )
    ]
