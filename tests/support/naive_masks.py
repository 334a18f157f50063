"""Masks the plain way: every detection as whole frames at the image's size.

This is Ultralytics' order of work for ``retina_masks=True``
(``process_mask_native``: prototype logits upsampled by 1, 2 or 4, the letterbox
padding cut off, the rest resized to the image, thresholded at logit 0 and cropped
to the box) written out over full frames with numpy. It is the yardstick for the
windowed masks of ``segbatch.workers.masks`` in tests and in the benchmark; it
allocates ``N x H x W`` float32 arrays.
"""

from __future__ import annotations

import math

import numpy as np


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
    boxes_source_xyxy: np.ndarray,
    source_size_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Image-size masks ``(N, H, W)`` bool, and which detections have any pixel
    (Ultralytics drops the others)."""
    num_masks, proto_h, proto_w = protos_chw.shape
    height, width = source_size_hw
    logits = (coefficients @ protos_chw.reshape(num_masks, -1)).reshape(
        -1, proto_h, proto_w
    )

    gain = min(4 * proto_h / height, 4 * proto_w / width)
    pad = (4 * proto_h - max(round(height * gain), 1)) | (
        4 * proto_w - max(round(width * gain), 1)
    )
    factor = 4 // math.gcd(4, pad | pad // 2)
    if factor > 1:
        logits = bilinear_nhw(logits, (factor * proto_h, factor * proto_w))

    grid_h, grid_w = logits.shape[1:]
    gain = min(grid_h / height, grid_w / width)
    content_h, content_w = max(round(height * gain), 1), max(round(width * gain), 1)
    top = round((grid_h - content_h) / 2 - 0.1)
    left = round((grid_w - content_w) / 2 - 0.1)
    content = logits[:, top : top + content_h, left : left + content_w]
    masks = bilinear_nhw(content, source_size_hw) > 0

    columns = np.arange(width, dtype=np.float32)[None, None, :]
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    x1, y1, x2, y2 = (boxes_source_xyxy[:, i, None, None] for i in range(4))
    masks &= (columns >= x1) & (columns < x2)
    masks &= (rows >= y1) & (rows < y2)
    return masks, masks.any(axis=(1, 2))
