"""Decoded pixels of any layout, made into the one the model takes: HxWx3 uint8 RGB.

The rules are the same whichever decoder produced the pixels:

- 16-bit samples are scaled by value, ``v -> round(v * 255 / 65535)``, so 0 stays 0
  and 65535 becomes 255. Pillow's 32-bit integer mode ``I`` is taken to hold 16-bit
  values and is clipped to 0..65535 first.
- Float samples (Pillow mode ``F``) are read on a 0.0 (black) to 1.0 (white) scale,
  clipped, with NaN as black.
- 1-bit, gray and palette images become three channels; CMYK (Adobe-inverted or not,
  as the file says), YCbCr and the other colour modes are converted by Pillow.
- Transparency, whether an alpha channel, a palette's transparent entries or a
  colour key, is composited over ``defaults.ALPHA_BACKGROUND_RGB`` with the 8-bit
  alpha: ``out = round((rgb * a + background * (255 - a)) / 255)``.
- EXIF orientation (1..8) is applied last, so the array is the picture a viewer
  shows.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from segbatch import defaults

_MAX_U8 = 255
_MAX_U16 = 65535

# v -> round(v * 255 / 65535) == round(v / 257); v / 257 is never exactly .5 off.
_U16_TO_U8 = ((np.arange(_MAX_U16 + 1, dtype=np.uint32) + 128) // 257).astype(np.uint8)

_BACKGROUND_RGB = np.asarray(defaults.ALPHA_BACKGROUND_RGB, dtype=np.uint16)


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """Scales integer samples in 0..65535 to 0..255 by value, rounding to nearest."""
    return _U16_TO_U8[values]


def rgb8_from_pillow(image: Image.Image) -> np.ndarray:
    """Converts a loaded Pillow image of any mode to HxWx3 uint8 RGB.

    Raises:
        ValueError: Pillow cannot convert the image's mode to RGB.
    """
    mode = image.mode

    if mode.startswith("I;16") or mode == "I":
        samples = np.asarray(image)
        if mode == "I":
            samples = np.clip(samples, 0, _MAX_U16)
        key = image.info.get("transparency")
        alpha = _key_alpha(samples == key) if isinstance(key, int) else None
        return composite(_gray_to_rgb(scale_16_to_8(samples)), alpha)

    if mode == "F":
        samples = np.nan_to_num(np.asarray(image), nan=0.0)
        gray = np.rint(np.clip(samples, 0.0, 1.0) * _MAX_U8).astype(np.uint8)
        return _gray_to_rgb(gray)

    if image.has_transparency_data:
        rgba = np.asarray(image.convert("RGBA"))
        return composite(rgba[..., :3], rgba[..., 3])

    rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    # Pillow hands out a read-only view of an immutable buffer.
    return rgb.copy()


def rgb8_from_opencv(decoded: np.ndarray, *, gray_key: int | None = None) -> np.ndarray:
    """Converts what ``cv2.imdecode(..., IMREAD_UNCHANGED)`` gives to HxWx3 RGB.

    Args:
        decoded: HxW gray, HxWx3 BGR or HxWx4 BGRA, uint8 or uint16.
        gray_key: for a gray image, the sample value (in ``decoded``'s scale) that
            marks a transparent pixel.

    Raises:
        ValueError: the array has a layout or dtype OpenCV does not give for images
            this module sends to it.
    """
    alpha = None
    if decoded.ndim == 2 and gray_key is not None:
        alpha = _key_alpha(decoded == gray_key)

    if decoded.dtype == np.uint16:
        decoded = scale_16_to_8(decoded)
    elif decoded.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 samples, got {decoded.dtype}")

    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels == 1:
        return composite(_gray_to_rgb(decoded.reshape(decoded.shape[:2])), alpha)
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 4:
        rgba = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
        return composite(rgba[..., :3], rgba[..., 3])
    raise ValueError(f"expected 1, 3 or 4 channels, got shape {decoded.shape}")


def composite(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Composites HxWx3 uint8 ``rgb`` over the background with HxW uint8 ``alpha``.

    Returns a new C-contiguous array; an opaque (or absent) alpha leaves the
    colours as they are.
    """
    if alpha is None or bool((alpha == _MAX_U8).all()):
        return np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()

    weight = alpha[..., None].astype(np.uint16)
    # Adding 127 before the floor division rounds to nearest; the sum fits uint16.
    blended = rgb * weight + _BACKGROUND_RGB * (_MAX_U8 - weight) + 127
    return (blended // _MAX_U8).astype(np.uint8)


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turns an array stored with EXIF ``orientation`` into the displayed picture."""
    match orientation:
        case 2:
            return cv2.flip(rgb, 1)
        case 3:
            return cv2.rotate(rgb, cv2.ROTATE_180)
        case 4:
            return cv2.flip(rgb, 0)
        case 5:
            return cv2.transpose(rgb)
        case 6:
            return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
        case 7:
            return cv2.rotate(cv2.transpose(rgb), cv2.ROTATE_180)
        case 8:
            return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
        case _:
            return rgb


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2RGB)


def _key_alpha(transparent: np.ndarray) -> np.ndarray:
    return np.where(transparent, 0, _MAX_U8).astype(np.uint8)
