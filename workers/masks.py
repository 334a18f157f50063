"""Instance masks at the source image's own resolution, from YOLO prototypes.

A detection's mask logits are its coefficients times the prototypes
``(nm, mh, mw)``, a grid a quarter of the input's size. They are brought to the
source image the way Ultralytics' ``predict`` does with ``retina_masks=True``
(``process_mask_native``), step by step and in float32:

1. the prototype grid is upsampled bilinearly by ``f`` (1, 2 or 4), the smallest
   factor at which the letterbox padding falls on whole cells;
2. the padding is cut off, leaving the cells of the letterbox content;
3. those cells are resized bilinearly to the source size, thresholded (logit 0 for
   a probability of one half) and cut to the detection's box in source pixels.

Upsampling logits rather than a thresholded input-size mask keeps edges at the
source resolution: a mask never carries the staircase of the 320-pixel input.

Nothing is computed full-frame. Each mask covers only its box, and each resampling
step reads only the cells its output needs, so memory follows the size of the
objects, not of the image; the final step runs in chunks of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from segbatch import defaults

PROTOTYPE_STRIDE = 4  # input pixels per prototype cell in YOLOv8/YOLO11-seg
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

    def shifted(self, offset: int) -> _Taps:
        """The same taps with ``offset`` added to their input indices."""
        return _Taps(
            self.low + offset, self.high + offset, self.weight_low, self.weight_high
        )

    @property
    def reach(self) -> tuple[int, int]:
        """The first input these taps read, and one past the last."""
        return int(self.low[0]), int(self.high[-1]) + 1


@lru_cache(maxsize=64)
def linear_taps(in_size: int, out_size: int) -> _Taps:
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


@dataclass(frozen=True)
class MaskResampling:
    """How prototype cells map onto the pixels of one source image.

    ``upsample_yx`` takes prototype rows and columns to the 2 or 4 times finer grid
    (None where the prototype grid itself is used); ``content_y``/``content_x``
    take the content rows and columns of that grid, which start at
    ``content_top``/``content_left``, to source pixels.
    """

    upsample_yx: tuple[_Taps, _Taps] | None
    content_top: int
    content_left: int
    content_y: _Taps
    content_x: _Taps
    source_size_hw: tuple[int, int]


def mask_resampling(
    prototype_size_hw: tuple[int, int], source_size_hw: tuple[int, int]
) -> MaskResampling:
    """The resampling plan of an image, with Ultralytics' rounding of the padding
    (a centred letterbox, as the workers' own)."""
    proto_h, proto_w = prototype_size_hw
    source_h, source_w = source_size_hw

    # The smallest upsampling at which the input's padding covers whole cells.
    input_h, input_w = PROTOTYPE_STRIDE * proto_h, PROTOTYPE_STRIDE * proto_w
    gain = min(input_h / source_h, input_w / source_w)
    pad = (input_h - max(round(source_h * gain), 1)) | (
        input_w - max(round(source_w * gain), 1)
    )
    factor = PROTOTYPE_STRIDE // math.gcd(PROTOTYPE_STRIDE, pad | pad // 2)

    grid_h, grid_w = factor * proto_h, factor * proto_w
    gain = min(grid_h / source_h, grid_w / source_w)
    content_h = max(round(source_h * gain), 1)
    content_w = max(round(source_w * gain), 1)
    top = round((grid_h - content_h) / 2 - 0.1)
    left = round((grid_w - content_w) / 2 - 0.1)
    return MaskResampling(
        upsample_yx=(
            (linear_taps(proto_h, grid_h), linear_taps(proto_w, grid_w))
            if factor > 1
            else None
        ),
        content_top=top,
        content_left=left,
        content_y=linear_taps(content_h, source_h),
        content_x=linear_taps(content_w, source_w),
        source_size_hw=source_size_hw,
    )


def source_mask(
    coefficients: np.ndarray,
    protos_chw: np.ndarray,
    box_xyxy: np.ndarray,
    plan: MaskResampling,
    logit_threshold: np.float32,
) -> MaskCrop | None:
    """The mask of one detection inside its box, in source pixels.

    Args:
        coefficients: the detection's ``(nm,)`` mask coefficients.
        protos_chw: the image's ``(nm, mh, mw)`` float32 prototypes.
        box_xyxy: the detection's box in source pixels, clipped to the image.
        plan: :func:`mask_resampling` of the image.
        logit_threshold: foreground where the resampled logit is above this.

    Returns:
        The mask over the box; None when no pixel is foreground.
    """
    source_h, source_w = plan.source_size_hw

    # Pixel c lies in the box when x1 <= c < x2, that is ceil(x1) <= c < ceil(x2).
    x1, y1, x2, y2 = (float(value) for value in box_xyxy)
    col0, col1 = max(math.ceil(x1), 0), min(math.ceil(x2), source_w)
    row0, row1 = max(math.ceil(y1), 0), min(math.ceil(y2), source_h)
    if col0 >= col1 or row0 >= row1:
        return None

    # From the output back to the cells it needs: source <- grid <- prototypes.
    final_y = plan.content_y[row0:row1].shifted(plan.content_top)
    final_x = plan.content_x[col0:col1].shifted(plan.content_left)
    grid_rows, grid_cols = final_y.reach, final_x.reach
    logits = _grid_logits(coefficients, protos_chw, plan, grid_rows, grid_cols)

    by_column = _blend_columns(logits, final_x.shifted(-grid_cols[0]))
    final_y = final_y.shifted(-grid_rows[0])
    mask = np.empty((row1 - row0, col1 - col0), bool)
    chunk_rows = min(mask.shape[0], max(1, defaults.MASK_CHUNK_PIXELS // mask.shape[1]))
    scratch = np.empty((2, chunk_rows, mask.shape[1]), np.float32)
    for start in range(0, mask.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        count = len(range(*rows.indices(mask.shape[0])))
        resampled = _blend_rows(by_column, final_y[rows], scratch[:, :count])
        np.greater(resampled, logit_threshold, out=mask[rows])
    if not mask.any():
        return None
    return MaskCrop(mask, (col0, row0))


def _grid_logits(
    coefficients: np.ndarray,
    protos_chw: np.ndarray,
    plan: MaskResampling,
    grid_rows: tuple[int, int],
    grid_cols: tuple[int, int],
) -> np.ndarray:
    """Mask logits over rows and columns ``[start, stop)`` of the upsampled grid."""
    upsample_yx, proto_rows, proto_cols = None, grid_rows, grid_cols
    if plan.upsample_yx is not None:
        upsample_yx = (
            plan.upsample_yx[0][slice(*grid_rows)],
            plan.upsample_yx[1][slice(*grid_cols)],
        )
        proto_rows, proto_cols = upsample_yx[0].reach, upsample_yx[1].reach

    num_masks = protos_chw.shape[0]
    window = protos_chw[:, slice(*proto_rows), slice(*proto_cols)]
    logits = (coefficients @ window.reshape(num_masks, -1)).reshape(window.shape[1:])
    if upsample_yx is None:
        return logits
    up_y, up_x = upsample_yx
    by_column = _blend_columns(logits, up_x.shifted(-proto_cols[0]))
    return _blend_rows(by_column, up_y.shifted(-proto_rows[0]))
