"""Predictions of each model variant on a labelled split, in one comparable form.

OpenVINO IRs run through the workers' own model, ``SegmentationModel`` (the same
decoding, letterbox, compiled model settings and ``postprocess``), up to the masks:
the final step of the workers, turning masks into simplified polygons, is left
out, so the figures measure the model and not the polygon tolerance. That path
needs no torch. The PyTorch weights run through Ultralytics' ``predict`` with
``retina_masks=True``: masks computed at the original resolution, as the workers
compute them.

Each prediction is kept as a :class:`~segbatch.models.toolchain.coco.ScoredInstance`
with its mask RLE-encoded at once, so memory stays small whatever the image size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segbatch import defaults
from segbatch.errors import ModelError
from segbatch.models.toolchain.coco import GroundTruth, ScoredInstance, mask_to_rle

logger = logging.getLogger(__name__)

Predictions = dict[int, list[ScoredInstance]]
IMAGES_PER_CALL = 8  # images handed to the model at once, to keep its requests busy


class MaskSegmenter(Protocol):
    """Anything that segments images into the workers' ``Segmentation`` results."""

    def segment_masks(
        self,
        images_rgb: Sequence[np.ndarray],
        *,
        confidence: float,
        iou: float,
        max_det: int,
    ) -> list[Any]: ...


def load_rgb(path: Path) -> np.ndarray:
    """An image file decoded as the workers decode it: ``(H, W, 3)`` uint8 RGB."""
    from segbatch.workers.decode import decode_image

    return decode_image(path.read_bytes(), name=str(path))


def load_ir(
    xml_path: Path,
    class_names: Sequence[str],
    input_size_hw: tuple[int, int],
    *,
    label: str,
) -> MaskSegmenter:
    """The workers' ``SegmentationModel`` for an IR outside a published version.

    ``input_size_hw`` is used where the IR's input is dynamic.
    """
    from segbatch.models.registry import ModelVersion
    from segbatch.workers.model import SegmentationModel

    build = ModelVersion(
        name="build",
        version=label,
        path=xml_path.parent,
        metadata={
            "class_names": list(class_names),
            "input_size_hw": list(input_size_hw),
            "artifacts": {label: xml_path.name},
        },
    )
    return SegmentationModel.load(build, precision=label, verify=False)


class CompiledSegmenter:
    """Letterbox, infer and decode with an already compiled IR, one image a request.

    The steps are the workers' own; this exists for callers that are handed a
    compiled model, as NNCF's accuracy control hands one to its validation.
    """

    def __init__(self, compiled_model: Any, input_size_hw: tuple[int, int]) -> None:
        from segbatch.workers.letterbox import Letterboxer

        self.request = compiled_model.create_infer_request()
        self.letterboxer = Letterboxer(input_size_hw)

    def segment_masks(
        self,
        images_rgb: Sequence[np.ndarray],
        *,
        confidence: float,
        iou: float,
        max_det: int,
    ) -> list[Any]:
        from segbatch.workers.postprocess import postprocess

        segmentations = []
        for image_rgb in images_rgb:
            tensor_nchw, geometry = self.letterboxer(image_rgb)
            outputs = self.request.infer({0: tensor_nchw})
            prediction, protos = _split_outputs(list(outputs.values()))
            segmentations.append(
                postprocess(
                    prediction[0],
                    protos[0],
                    geometry,
                    num_classes=prediction.shape[1] - 4 - protos.shape[1],
                    confidence=confidence,
                    iou=iou,
                    max_det=max_det,
                )
            )
        return segmentations


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
    segmenter: MaskSegmenter,
    truth: GroundTruth,
    *,
    image_ids: Iterable[int] | None = None,
    confidence: float = defaults.EVAL_CONFIDENCE,
    max_det: int = defaults.EVAL_MAX_DETECTIONS,
) -> Predictions:
    """Predictions for the images of ``truth`` (or those of ``image_ids``)."""
    wanted = None if image_ids is None else set(image_ids)
    images = [i for i in truth.images if wanted is None or i.image_id in wanted]

    predictions: Predictions = {}
    for start in range(0, len(images), IMAGES_PER_CALL):
        chunk = images[start : start + IMAGES_PER_CALL]
        images_rgb = [load_rgb(image.path) for image in chunk]
        segmentations = segmenter.segment_masks(
            images_rgb,
            confidence=confidence,
            iou=defaults.IOU_THRESHOLD,
            max_det=max_det,
        )
        for image, image_rgb, segmentation in zip(
            chunk, images_rgb, segmentations, strict=True
        ):
            predictions[image.image_id] = _instances(segmentation, image_rgb.shape[:2])
    return predictions


def _instances(segmentation: Any, size_hw: tuple[int, int]) -> list[ScoredInstance]:
    return [
        ScoredInstance(
            class_id=int(class_id),
            score=float(score),
            box_xyxy=_box(box),
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
        [result] = model.predict(
            str(image.path),
            imgsz=imgsz,
            conf=confidence,
            iou=defaults.IOU_THRESHOLD,
            max_det=max_det,
            retina_masks=True,
            device="cpu",
            verbose=False,
        )
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
            box_xyxy=_box(box),
            mask_rle=mask_to_rle(mask),
        )
        for box, score, class_id, mask in zip(
            boxes_xyxy, scores, class_ids, masks_nhw, strict=True
        )
    ]


def _box(values: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2
