"""Decoding a YOLO segmentation output into detections in source pixels.

A YOLOv8 or YOLO11 segmentation export gives two arrays per image:

- the prediction ``(4 + nc + nm, anchors)``: for each anchor a box (centre x, centre
  y, width, height in input pixels), ``nc`` class scores and ``nm`` mask coefficients;
- the prototypes ``(nm, mh, mw)``: an anchor's mask logits are its coefficients
  times the prototypes.

Decoding follows Ultralytics' ``predict`` (``retina_masks=False``) step by step and
in float32, as it computes: anchors whose best class scores above the confidence,
class-aware NMS, mask logits upsampled bilinearly to the input size, thresholded and
cropped to the box, detections without a mask pixel dropped. For the source image the
boxes are un-letterboxed and clipped, and each input-size mask is resampled
bilinearly onto the image and thresholded at one half, which is what Ultralytics'
``scale_masks`` gives for predict's masks.

Masks are never built full-frame: each is computed over the window of the image that
its box can reach, so memory follows the size of the objects, not of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from segbatch import defaults
from segbatch.workers.letterbox import LetterboxGeometry

# A bilinearly resampled 0/1 mask is foreground above this, as Ultralytics thresholds.
_RESAMPLED_MASK_THRESHOLD = np.float32(0.5)
_HALF = np.float32(0.5)


@dataclass(frozen=True)
class MaskCrop:
    """A binary mask over a window of an image: ``mask_hw`` with its top-left pixel
    at column ``offset_xy[0]``, row ``offset_xy[1]``; pixels outside are background."""

    mask_hw: np.ndarray
    offset_xy: tuple[int, int]

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask_hw))

    def paste(self, size_hw: tuple[int, int]) -> np.ndarray:
        """The mask as a full ``size_hw`` boolean frame."""
        frame = np.zeros(size_hw, bool)
        x0, y0 = self.offset_xy
        height, width = self.mask_hw.shape
        frame[y0 : y0 + height, x0 : x0 + width] = self.mask_hw
        return frame


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
) -> Segmentation:
    """Turn one image's model outputs into detections in source pixels."""
    num_masks = protos_chw.shape[0]
    if prediction_ca.ndim != 2 or prediction_ca.shape[0] != 4 + num_classes + num_masks:
        raise ValueError(
            f"expected a prediction of shape (4 + {num_classes} classes + {num_masks} "
            f"mask coefficients, anchors), got {prediction_ca.shape}"
        )

    if not 0 < mask_threshold < 1:
        raise ValueError(f"expected a mask threshold in (0, 1), got {mask_threshold}")

    candidates = select_candidates(prediction_ca, num_classes, confidence)
    kept = class_aware_nms(
        candidates.boxes_xyxy, candidates.scores, candidates.class_ids, iou, max_det
    )

    logit_threshold = np.float32(math.log(mask_threshold / (1.0 - mask_threshold)))
    protos = protos_chw.astype(np.float32, copy=False)
    rows, masks = [], []
    for index in kept:
        input_mask = _input_mask(
            candidates.coefficients[index],
            protos,
            candidates.boxes_xyxy[index],
            geometry.input_size_hw,
            logit_threshold,
        )
        if input_mask is None:  # no mask pixel at the input size: Ultralytics drops it
            continue
        rows.append(index)
        masks.append(_source_mask(*input_mask, geometry))

    chosen = np.asarray(rows, dtype=np.int64)
    return Segmentation(
        boxes_xyxy=geometry.boxes_to_source(candidates.boxes_xyxy[chosen]),
        scores=candidates.scores[chosen],
        class_ids=candidates.class_ids[chosen],
        masks=tuple(masks),
    )


@dataclass(frozen=True)
class _Taps:
    """Bilinear sampling of one axis: output ``i`` blends inputs ``low[i]`` and
    ``high[i]`` with weights ``weight_low[i]`` and ``weight_high[i]``."""

    low: np.ndarray
    high: np.ndarray
    weight_low: np.ndarray
    weight_high: np.ndarray

    def __getitem__(self, window: slice) -> _Taps:
        return _Taps(
            self.low[window],
            self.high[window],
            self.weight_low[window],
            self.weight_high[window],
        )


@lru_cache(maxsize=32)
def _linear_taps(in_size: int, out_size: int) -> _Taps:
    """PyTorch's bilinear sampling (``align_corners=False``) from ``in_size`` to
    ``out_size`` samples, computed in float32 as its CPU kernel does."""
    outputs = np.arange(out_size, dtype=np.float32)
    if in_size == out_size:
        low = np.arange(out_size, dtype=np.int64)
        return _freeze(low, low, np.ones_like(outputs), np.zeros_like(outputs))

    # The kernel fuses the multiply and subtract: one rounding, of the exact value
    # (the float64 product of two float32 numbers is exact).
    scale = np.float32(in_size) / np.float32(out_size)
    exact = np.float64(scale) * (outputs + _HALF).astype(np.float64) - 0.5
    sources = np.maximum(exact.astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(sources).astype(np.int64), in_size - 1)
    weight_high = np.clip(sources - low.astype(np.float32), 0, 1).astype(np.float32)
    high = low + (low < in_size - 1)
    return _freeze(low, high, np.float32(1) - weight_high, weight_high)


def _freeze(*arrays: np.ndarray) -> _Taps:
    for array in arrays:
        array.flags.writeable = False
    return _Taps(*arrays)


def _blend_columns(values: np.ndarray, taps_x: _Taps) -> np.ndarray:
    """Resample the columns of ``values`` (float32); tap indices are relative to it."""
    return values[:, taps_x.low] * taps_x.weight_low + (
        values[:, taps_x.high] * taps_x.weight_high
    )


def _blend_rows(
    by_column: np.ndarray, taps_y: _Taps, out: np.ndarray | None = None
) -> np.ndarray:
    """Resample the rows, into ``out`` when given; columns first, then rows, is the
    order PyTorch's kernel adds the products in, so the sums round alike."""
    low = np.take(by_column, taps_y.low, axis=0, out=None if out is None else out[0])
    high = np.take(by_column, taps_y.high, axis=0, out=None if out is None else out[1])
    low *= taps_y.weight_low[:, None]
    high *= taps_y.weight_high[:, None]
    low += high
    return low


def _shift(taps: _Taps, origin: int) -> _Taps:
    return _Taps(
        taps.low - origin, taps.high - origin, taps.weight_low, taps.weight_high
    )


def _input_mask(
    coefficients: np.ndarray,
    protos_chw: np.ndarray,
    box_xyxy: np.ndarray,
    input_size_hw: tuple[int, int],
    logit_threshold: np.float32,
) -> tuple[np.ndarray, int, int] | None:
    """The input-size mask of one detection inside its box, as Ultralytics'
    ``process_mask(..., upsample=True)`` computes it.

    Returns:
        The boolean mask of the pixels inside the box, and the input row and
        column of its top-left pixel; None when no pixel is foreground.
    """
    num_masks, proto_h, proto_w = protos_chw.shape
    input_h, input_w = input_size_hw

    # Pixel c lies in the box when x1 <= c < x2, that is ceil(x1) <= c < ceil(x2).
    x1, y1, x2, y2 = (float(value) for value in box_xyxy)
    col0, col1 = max(math.ceil(x1), 0), min(math.ceil(x2), input_w)
    row0, row1 = max(math.ceil(y1), 0), min(math.ceil(y2), input_h)
    if col0 >= col1 or row0 >= row1:
        return None

    taps_y = _linear_taps(proto_h, input_h)[row0:row1]
    taps_x = _linear_taps(proto_w, input_w)[col0:col1]
    proto_row0, proto_row1 = int(taps_y.low[0]), int(taps_y.high[-1]) + 1
    proto_col0, proto_col1 = int(taps_x.low[0]), int(taps_x.high[-1]) + 1

    window = protos_chw[:, proto_row0:proto_row1, proto_col0:proto_col1]
    logits = (coefficients @ window.reshape(num_masks, -1)).reshape(window.shape[1:])
    by_column = _blend_columns(
        logits.astype(np.float32, copy=False), _shift(taps_x, proto_col0)
    )
    upsampled = _blend_rows(by_column, _shift(taps_y, proto_row0))
    mask = upsampled > logit_threshold
    if not mask.any():
        return None
    return mask, row0, col0


def _source_mask(
    input_mask: np.ndarray, row0: int, col0: int, geometry: LetterboxGeometry
) -> MaskCrop:
    """Resample one input-size mask onto the source image over its reach only.

    The letterbox content of the input is resized bilinearly to the source size and
    thresholded at one half, as Ultralytics' ``scale_masks`` of a 0/1 mask does.
    """
    resized_h, resized_w = geometry.resized_size_hw
    source_h, source_w = geometry.source_size_hw

    # Rows and columns of the mask within the letterbox content.
    content_row0 = max(row0 - geometry.pad_top, 0)
    content_row1 = min(row0 + input_mask.shape[0] - geometry.pad_top, resized_h)
    content_col0 = max(col0 - geometry.pad_left, 0)
    content_col1 = min(col0 + input_mask.shape[1] - geometry.pad_left, resized_w)

    taps_y = _linear_taps(resized_h, source_h)
    taps_x = _linear_taps(resized_w, source_w)
    out_row0, out_row1 = _reach(taps_y, content_row0, content_row1)
    out_col0, out_col1 = _reach(taps_x, content_col0, content_col1)
    if out_row0 >= out_row1 or out_col0 >= out_col1:
        return MaskCrop(np.zeros((0, 0), bool), (0, 0))
    taps_y, taps_x = taps_y[out_row0:out_row1], taps_x[out_col0:out_col1]

    # The content rows and columns the taps read, zero outside the mask.
    first_row = min(int(taps_y.low[0]), content_row0)
    last_row = max(int(taps_y.high[-1]) + 1, content_row1)
    first_col = min(int(taps_x.low[0]), content_col0)
    last_col = max(int(taps_x.high[-1]) + 1, content_col1)
    values = np.zeros((last_row - first_row, last_col - first_col), np.float32)
    mask_row0 = content_row0 + geometry.pad_top - row0
    mask_col0 = content_col0 + geometry.pad_left - col0
    values[
        content_row0 - first_row : content_row1 - first_row,
        content_col0 - first_col : content_col1 - first_col,
    ] = input_mask[
        mask_row0 : mask_row0 + content_row1 - content_row0,
        mask_col0 : mask_col0 + content_col1 - content_col0,
    ]
    taps_y, taps_x = _shift(taps_y, first_row), _shift(taps_x, first_col)

    by_column = _blend_columns(values, taps_x)
    mask = np.empty((out_row1 - out_row0, out_col1 - out_col0), bool)
    chunk_rows = min(mask.shape[0], max(1, defaults.MASK_CHUNK_PIXELS // mask.shape[1]))
    scratch = np.empty((2, chunk_rows, mask.shape[1]), np.float32)
    for start in range(0, mask.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        count = len(range(*rows.indices(mask.shape[0])))
        resampled = _blend_rows(by_column, taps_y[rows], scratch[:, :count])
        np.greater(resampled, _RESAMPLED_MASK_THRESHOLD, out=mask[rows])
    return MaskCrop(mask, (out_col0, out_row0))


def _reach(taps: _Taps, first: int, stop: int) -> tuple[int, int]:
    """The outputs whose two taps touch inputs ``first .. stop - 1``."""
    if first >= stop:
        return 0, 0
    start = int(np.searchsorted(taps.high, first, side="left"))
    end = int(np.searchsorted(taps.low, stop - 1, side="right"))
    return start, end
