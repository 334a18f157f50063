"""Letterboxing: fit an image into the model's input without changing its aspect.

The image is resized by one factor with bilinear interpolation so that it fits the
input, and centred on a grey canvas. Every number here is computed as Ultralytics'
``LetterBox`` computes it for a static-shape export (``auto=False``, ``center=True``,
``scaleup=True``): the resized size rounds each side on its own, and an odd padding
puts the extra pixel at the bottom and right. The model then sees exactly the pixels it
would see under Ultralytics' own ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segbatch import defaults

# Rounding offset of Ultralytics' padding split: the smaller half goes top and left.
_PAD_ROUNDING = 0.1
_PIXEL_MAX = np.float32(255.0)


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where an image of ``source_size_hw`` lies inside a letterboxed input.

    The resized image occupies rows ``pad_top .. pad_top + resized_size_hw[0]`` and
    columns ``pad_left .. pad_left + resized_size_hw[1]`` of the input.
    """

    source_size_hw: tuple[int, int]
    input_size_hw: tuple[int, int]
    resized_size_hw: tuple[int, int]
    pad_top: int
    pad_left: int

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Input pixels per source pixel along x and y (they differ by rounding)."""
        return (
            self.resized_size_hw[1] / self.source_size_hw[1],
            self.resized_size_hw[0] / self.source_size_hw[0],
        )

    def boxes_to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map ``(N, 4)`` input-space boxes to source pixels, clipped to the image.

        Float32 arithmetic in the order Ultralytics' ``scale_boxes`` uses.
        """
        scale_x, scale_y = self.scale_xy
        height, width = self.source_size_hw
        offset = np.array(
            [self.pad_left, self.pad_top, self.pad_left, self.pad_top], np.float32
        )
        scale = np.array([scale_x, scale_y, scale_x, scale_y], np.float32)
        boxes = (boxes_xyxy.astype(np.float32, copy=False) - offset) / scale
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        return boxes


def letterbox_geometry(
    source_size_hw: tuple[int, int], input_size_hw: tuple[int, int]
) -> LetterboxGeometry:
    """Where an image of ``source_size_hw`` goes in an input of ``input_size_hw``."""
    source_h, source_w = source_size_hw
    input_h, input_w = input_size_hw
    if min(source_h, source_w, input_h, input_w) < 1:
        raise ValueError(
            f"expected positive sizes, got source {source_size_hw} "
            f"and input {input_size_hw}"
        )

    ratio = min(input_h / source_h, input_w / source_w)
    resized_w = max(round(source_w * ratio), 1)
    resized_h = max(round(source_h * ratio), 1)

    pad_left = round((input_w - resized_w) / 2 - _PAD_ROUNDING)
    pad_top = round((input_h - resized_h) / 2 - _PAD_ROUNDING)
    return LetterboxGeometry(
        source_size_hw=(source_h, source_w),
        input_size_hw=(input_h, input_w),
        resized_size_hw=(resized_h, resized_w),
        pad_top=pad_top,
        pad_left=pad_left,
    )


class Letterboxer:
    """Letterboxes images into one reusable input buffer of a fixed input size.

    Not thread-safe: each call overwrites the canvas of the previous one. The tensor
    returned by ``__call__`` is written into ``out`` when given, otherwise into a
    buffer owned by this object (valid until the next call).
    """

    def __init__(
        self, input_size_hw: tuple[int, int], fill: int = defaults.LETTERBOX_FILL
    ) -> None:
        self.input_size_hw = (int(input_size_hw[0]), int(input_size_hw[1]))
        self.fill = fill
        self._canvas_hwc = np.full((*self.input_size_hw, 3), fill, np.uint8)
        self._tensor_nchw = np.empty((1, 3, *self.input_size_hw), np.float32)
        self._last_geometry: LetterboxGeometry | None = None

    def __call__(
        self, image_rgb: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, LetterboxGeometry]:
        """Letterbox an ``(H, W, 3)`` uint8 RGB image.

        Returns:
            The ``(1, 3, H, W)`` float32 RGB tensor scaled to 0..1, and the geometry
            that maps its coordinates back to the image.
        """
        shape = image_rgb.shape
        if len(shape) != 3 or shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(
                "expected an (H, W, 3) uint8 RGB image, got shape "
                f"{image_rgb.shape} of {image_rgb.dtype}"
            )
        geometry = letterbox_geometry(image_rgb.shape[:2], self.input_size_hw)
        self._place(image_rgb, geometry)

        tensor = self._tensor_nchw if out is None else out
        if tensor.shape != (1, 3, *self.input_size_hw) or tensor.dtype != np.float32:
            raise ValueError(
                f"expected an output buffer of shape (1, 3, {self.input_size_hw[0]}, "
                f"{self.input_size_hw[1]}) float32, got {tensor.shape} {tensor.dtype}"
            )
        # Division, not multiplication by 1/255: it rounds as Ultralytics' ``div_``.
        np.divide(self._canvas_hwc.transpose(2, 0, 1), _PIXEL_MAX, out=tensor[0])
        return tensor, geometry

    def _place(self, image_rgb: np.ndarray, geometry: LetterboxGeometry) -> None:
        """Resize the image into the canvas and grey whatever it does not cover."""
        resized_h, resized_w = geometry.resized_size_hw
        top, left = geometry.pad_top, geometry.pad_left
        canvas = self._canvas_hwc

        if geometry != self._last_geometry:
            canvas[:top] = self.fill
            canvas[top + resized_h :] = self.fill
            canvas[:, :left] = self.fill
            canvas[:, left + resized_w :] = self.fill
            self._last_geometry = geometry

        region = canvas[top : top + resized_h, left : left + resized_w]
        if image_rgb.shape[:2] == (resized_h, resized_w):
            region[...] = image_rgb
        else:
            resized = cv2.resize(
                np.ascontiguousarray(image_rgb),  # OpenCV needs positive strides
                (resized_w, resized_h),
                dst=region,
                interpolation=cv2.INTER_LINEAR,
            )
            if resized is not region:  # OpenCV chose to allocate after all
                region[...] = resized


def letterbox(
    image_rgb: np.ndarray, input_size_hw: tuple[int, int]
) -> tuple[np.ndarray, LetterboxGeometry]:
    """Letterbox one image into a new ``(1, 3, H, W)`` tensor (see Letterboxer)."""
    tensor, geometry = Letterboxer(input_size_hw)(image_rgb)
    return tensor, geometry
