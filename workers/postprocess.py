"""Decoding a YOLO segmentation output into detections in source pixels.

A YOLOv8 or YOLO11 segmentation export gives two arrays per image:

- the prediction ``(4 + nc + nm, anchors)``: for each anchor a box (centre x, centre
  y, width, height in input pixels), ``nc`` class scores and ``nm`` mask coefficients;
- the prototypes ``(nm, mh, mw)``: an anchor's mask logits are its coefficients
  times the prototypes.

Decoding follows Ultralytics' ``predict`` with ``retina_masks=True`` step by step
and in float32, as it computes: anchors whose best class scores above the
confidence, class-aware NMS, boxes un-letterboxed to the source image and clipped,
then each mask computed at the source resolution inside its box
(:mod:`segbatch.workers.masks`), detections without a mask pixel dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segbatch import defaults
from segbatch.workers.letterbox import LetterboxGeometry
from segbatch.workers.masks import MaskCrop, mask_resampling, source_mask


@dataclass(frozen=True)
class Segmentation:
    """Detections of one image, best score first, in source pixel coordinates."""

    boxes_xyxy: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    masks: tuple[MaskCrop, ...]

    def __len__(self) -> int:
        return len(self.scores)

    def masks_nhw(self, size_hw: tuple[int, int]) -> np.ndarray:
        """Every mask as a full frame, ``(N, H, W)`` bool; for small images only."""
        frames = np.zeros((len(self.masks), *size_hw), bool)
        for frame, crop in zip(frames, self.masks, strict=True):
            frame[...] = crop.paste(size_hw)
        return frames


@dataclass(frozen=True)
class Candidates:
    """Anchors that pass the confidence threshold, in input pixel coordinates."""

    boxes_xyxy: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64
    coefficients: np.ndarray  # (K, nm) float32


def select_candidates(
    prediction_ca: np.ndarray,
    num_classes: int,
    confidence: float,
    max_candidates: int = defaults.NMS_MAX_CANDIDATES,
) -> Candidates:
    """Anchors whose best class scores strictly above ``confidence``.

    At most ``max_candidates`` of them are kept, the highest-scoring.
    """
    class_scores = prediction_ca[4 : 4 + num_classes]
    best_scores = class_scores.max(axis=0)
    anchors = np.flatnonzero(best_scores > confidence)

    if len(anchors) > max_candidates:
        order = np.argsort(-best_scores[anchors], kind="stable")[:max_candidates]
        anchors = anchors[order]

    columns = prediction_ca[:, anchors].T.astype(np.float32, copy=False)
    centres, half_sizes = columns[:, 0:2], columns[:, 2:4] / np.float32(2)
    boxes_xyxy = np.concatenate([centres - half_sizes, centres + half_sizes], axis=1)
    return Candidates(
        boxes_xyxy=boxes_xyxy,
        scores=best_scores[anchors].astype(np.float32, copy=False),
        class_ids=class_scores[:, anchors].argmax(axis=0).astype(np.int64),
        coefficients=np.ascontiguousarray(columns[:, 4 + num_classes :]),
    )


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression, as ``torchvision.ops.nms`` decides it.

    Boxes are taken by descending score; each suppresses the later boxes that
    overlap it with an IoU strictly above ``iou_threshold``. Stops after
    ``max_keep`` boxes are kept.

    Returns:
        The indices of the kept boxes, best score first.
    """
    boxes = boxes_xyxy.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    limit = len(order) if max_keep is None else max_keep

    keep: list[int] = []
    while len(order) and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))

        widths = np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])
        heights = np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])
        intersections = np.maximum(widths, 0) * np.maximum(heights, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ious = intersections / (areas[best] + areas[rest] - intersections)
        # A NaN IoU (two empty boxes) suppresses nothing, as in torchvision.
        order = rest[~(ious > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def class_aware_nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """NMS within each class: boxes are shifted apart by class so none overlap."""
    offsets = class_ids.astype(np.float32) * np.float32(defaults.NMS_CLASS_OFFSET_PX)
    return nms(boxes_xyxy + offsets[:, None], scores, iou_threshold, max_keep)


def postprocess(
    prediction_ca: np.ndarray,
    protos_chw: np.ndarray,
    geometry: LetterboxGeometry,
    *,
    num_classes: int,
    confidence: float = defaults.CONFIDENCE_THRESHOLD,
    iou: float = defaults.IOU_THRESHOLD,
    max_det: int = defaults.MAX_DETECTIONS,
    mask_threshold: float = defaults.MASK_THRESHOLD,
    class_agnostic: bool = False,
) -> Segmentation:
    """Turn one image's model outputs into detections in source pixels.

    NMS runs within each class, as Ultralytics' does by default, unless
    ``class_agnostic``: then a box suppresses overlapping ones of any class.
    """
    num_masks = protos_chw.shape[0]
    if prediction_ca.ndim != 2 or prediction_ca.shape[0] != 4 + num_classes + num_masks:
        raise ValueError(
            f"expected a prediction of shape (4 + {num_classes} classes + {num_masks} "
            f"mask coefficients, anchors), got {prediction_ca.shape}"
        )

    if not 0 < mask_threshold < 1:
        raise ValueError(f"expected a mask threshold in (0, 1), got {mask_threshold}")

    candidates = select_candidates(prediction_ca, num_classes, confidence)
    if class_agnostic:
        kept = nms(candidates.boxes_xyxy, candidates.scores, iou, max_det)
    else:
        kept = class_aware_nms(
            candidates.boxes_xyxy, candidates.scores, candidates.class_ids, iou, max_det
        )

    logit_threshold = np.float32(math.log(mask_threshold / (1.0 - mask_threshold)))
    protos = protos_chw.astype(np.float32, copy=False)
    boxes_source_xyxy = geometry.boxes_to_source(candidates.boxes_xyxy[kept])
    plan = mask_resampling(protos.shape[1:], geometry.source_size_hw)
    rows, masks = [], []
    for row, index in enumerate(kept):
        mask = source_mask(
            candidates.coefficients[index],
            protos,
            boxes_source_xyxy[row],
            plan,
            logit_threshold,
        )
        if mask is None:  # no mask pixel in its box: Ultralytics drops it
            continue
        rows.append(row)
        masks.append(mask)

    chosen = np.asarray(rows, dtype=np.int64)
    return Segmentation(
        boxes_xyxy=boxes_source_xyxy[chosen],
        scores=candidates.scores[kept[chosen]],
        class_ids=candidates.class_ids[kept[chosen]],
        masks=tuple(masks),
    )
