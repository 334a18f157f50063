"""Masks the plain way: every detection as whole frames, at input and image size.

This is Ultralytics' order of work (``process_mask`` with ``upsample=True``, then
``scale_masks`` and a threshold at one half) written out over full frames with
numpy. It is the yardstick for the windowed masks of ``segbatch.workers.postprocess``
in tests and in the benchmark; it allocates ``N x H x W`` float32 arrays.
"""

from __future__ import annotations

import numpy as np

from segbatch.workers.letterbox import LetterboxGeometry


def bilinear_nhw(values_nhw: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``F.interpolate(mode="bilinear", align_corners=False)`` of whole frames."""
    rows = _axis(values_nhw.shape[1], out_hw[0])
    cols = _axis(values_nhw.shape[2], out_hw[1])
    values = values_nhw.astype(np.float32, copy=False)
    by_column = values[:, :, cols[0]] * cols[2] + values[:, :, cols[1]] * cols[3]
    return (
        by_column[:, rows[0], :] * rows[2][:, None]
        + by_column[:, rows[1], :] * rows[3][:, None]
    )


def _axis(
    in_size: int, out_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Low and high source indices and their weights; the source position is
    rounded to float32 once, as PyTorch's fused multiply-add does."""
    if in_size == out_size:
        same = np.arange(out_size)
        return same, same, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    scale = float(np.float32(in_size) / np.float32(out_size))
    exact = scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5
    position = np.maximum(exact.astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight_high = np.clip(position - low.astype(np.float32), 0, 1).astype(np.float32)
    return low, high, np.float32(1) - weight_high, weight_high


def naive_masks_nhw(
    coefficients: np.ndarray,
    protos_chw: np.ndarray,
    boxes_input_xyxy: np.ndarray,
    geometry: LetterboxGeometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Image-size masks ``(N, H, W)`` bool, and which detections have any pixel at
    the input size (Ultralytics drops the others)."""
    num_masks, proto_h, proto_w = protos_chw.shape
    logits = (coefficients @ protos_chw.reshape(num_masks, -1)).reshape(
        -1, proto_h, proto_w
    )
    input_masks = bilinear_nhw(logits, geometry.input_size_hw) > 0

    input_h, input_w = geometry.input_size_hw
    columns = np.arange(input_w, dtype=np.float32)[None, None, :]
    rows = np.arange(input_h, dtype=np.float32)[None, :, None]
    x1, y1, x2, y2 = (boxes_input_xyxy[:, i, None, None] for i in range(4))
    input_masks &= (columns >= x1) & (columns < x2)
    input_masks &= (rows >= y1) & (rows < y2)
    has_pixels = input_masks.any(axis=(1, 2))

    top, left = geometry.pad_top, geometry.pad_left
    height, width = geometry.resized_size_hw
    content = input_masks[:, top : top + height, left : left + width]
    resampled = bilinear_nhw(content.astype(np.float32), geometry.source_size_hw)
    return resampled > np.float32(0.5), has_pixels
