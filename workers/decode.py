"""Image bytes to the RGB picture a viewer shows, or a DecodeError that says why not.

Every rule holds for every format, decoder and pixel mode; ``name`` (the object's
URI) is in every error message.

- Zero bytes raise ``EmptyImage``. Bytes without the signature of a decoded format
  (``defaults.DECODE_FORMATS``) raise ``NotAnImage``, quoting how they start (an
  HTML error page shows as its first characters); the signature of an image format
  that is not decoded (HEIF/AVIF, JPEG 2000, JPEG XL) raises ``UnsupportedImage``.
- Bytes that start like a decoded format but cannot be read whole raise
  ``CorruptImage`` ("truncated or corrupt"). A partially decoded image is never
  returned: Pillow's ``LOAD_TRUNCATED_IMAGES`` must stay False (a ``ConfigError``
  otherwise), every decoder fails when its data runs out (the one damaged JPEG it
  misses is marked NOTE below), the decoded size must equal the header's, and PNG
  is decoded by libpng (through OpenCV), which also rejects a zlib stream that
  ends before the last row and a file cut before IEND.
- ``width * height > max_pixels`` raises ``ImageTooLarge``, decided from the header
  before a pixel is decoded, so memory stays bounded by the limit. This module owns
  that limit: Pillow's process-wide decompression-bomb check is switched off at
  import, since its fixed thresholds (a warning above 89 MP, an error above 179 MP)
  would otherwise decide before the configured limit; should other code turn it
  back on, its error is still reported as ``ImageTooLarge``.
- EXIF orientation 1..8 is applied (a missing or invalid tag counts as 1); pixel
  modes, 16-bit scaling and transparency follow ``segbatch.workers.pixels``.
  Embedded ICC profiles are not applied: samples are taken as sRGB.
- Decoders: OpenCV for gray and YCbCr JPEG (the common case, and the faster
  decoder), for every PNG and for 16-bit colour TIFF (Pillow keeps only the high
  byte of 16-bit colour samples); Pillow for the rest, including CMYK and YCCK JPEG,
  whose Adobe inversion only Pillow reads from the file. Any other error either
  raises becomes a ``DecodeError`` subclass.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile

from segbatch import defaults
from segbatch.errors import (
    ConfigError,
    CorruptImage,
    DecodeError,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedImage,
)
from segbatch.workers import pixels, signatures

logger = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_EXIF_ORIENTATION = 0x0112
_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PHOTOMETRIC = 262
_TIFF_PHOTOMETRIC_RGB = 2
_PNG_IHDR_BIT_DEPTH = 24  # byte offsets from the start of the file
_PNG_IHDR_COLOUR_TYPE = 25
_PNG_COLOUR_TYPE_GRAY = 0

_JPEG_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
# IMREAD_UNCHANGED keeps 16-bit samples and alpha, and leaves a PNG unturned.
_RAW_FLAGS = cv2.IMREAD_UNCHANGED


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, before any pixel is decoded."""

    format: str  # Pillow's name: "JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "GIF"
    size_wh: tuple[int, int]  # as stored, before EXIF orientation
    mode: str  # Pillow mode as stored
    orientation: int  # EXIF orientation 1..8; 1 when absent

    @property
    def displayed_size_wh(self) -> tuple[int, int]:
        """Width and height of the picture a viewer shows."""
        width, height = self.size_wh
        return (height, width) if self.orientation >= 5 else (width, height)


def read_header(data: bytes, *, name: str, max_pixels: int) -> ImageHeader:
    """Reads format, size, mode and orientation without decoding pixels.

    Raises:
        DecodeError: a subclass saying why ``data`` is not a usable image.
    """
    header, _ = _open(data, name=name, max_pixels=max_pixels)
    return header


def decode_image(
    data: bytes, *, name: str, max_pixels: int = defaults.MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Decodes ``data`` to an HxWx3 uint8 RGB array in its displayed orientation.

    Raises:
        DecodeError: a subclass saying why ``data`` is not a usable image.
    """
    header, image = _open(data, name=name, max_pixels=max_pixels)

    with image:
        if header.format in ("JPEG", "MPO") and header.mode in ("L", "RGB"):
            # NOTE: a JPEG whose compressed data stops early at a marker (cut, then
            # closed with an end-of-image marker) decodes with its missing blocks
            # filled in: libjpeg only warns, and neither OpenCV nor Pillow reports
            # its warnings. A decoder that fails on them, such as simplejpeg in
            # strict mode, would end this.
            turned = False
            rgb = _decode_opencv(data, _JPEG_FLAGS, header.size_wh, header, name)
        elif header.format == "PNG" or _is_deep_colour_tiff(image):
            # OpenCV's TIFF decoder applies the orientation tag whatever the flags.
            turned = header.format == "TIFF"
            size_wh = header.displayed_size_wh if turned else header.size_wh
            decoded = _decode_opencv(data, _RAW_FLAGS, size_wh, header, name)
            rgb = pixels.rgb8_from_opencv(decoded, gray_key=_png_gray_key(image, data))
        else:
            rgb, turned = _decode_pillow(image, header, name)

    if not turned:
        rgb = pixels.apply_orientation(rgb, header.orientation)
    logger.debug(
        "Decoded %s: %s %s %dx%d, orientation %d.",
        name,
        header.format,
        header.mode,
        *header.size_wh,
        header.orientation,
    )
    return rgb


def _open(
    data: bytes, *, name: str, max_pixels: int
) -> tuple[ImageHeader, ImageFile.ImageFile]:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; it must stay False so that "
            f"a truncated image fails instead of decoding in part (decoding {name})"
        )
    if not data:
        raise EmptyImage(f"{name} is empty (0 bytes); expected an image")

    try:
        image = Image.open(io.BytesIO(data), formats=defaults.DECODE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(
            f"{name} is over Pillow's decompression-bomb limit ({exc}); "
            f"the configured limit is {_pixels_text(max_pixels)}"
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise _unreadable(data, name, exc) from exc

    width, height = _stored_size_wh(image)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {_pixels_text(width * height)}, over the "
            f"configured limit of {_pixels_text(max_pixels)} "
            f"(max_pixels={max_pixels}); refused from its header, nothing decoded"
        )

    assert image.format is not None
    header = ImageHeader(
        format=image.format,
        size_wh=(width, height),
        mode=image.mode,
        orientation=_orientation(image, data, name),
    )
    return header, image


def _decode_opencv(
    data: bytes,
    flags: int,
    expected_wh: tuple[int, int],
    header: ImageHeader,
    name: str,
) -> np.ndarray:
    # NOTE: OpenCV refuses images over its own limit of 2**30 pixels (unless the
    # CV_IO_MAX_IMAGE_PIXELS environment variable raises it), so with max_pixels
    # set above that such images are reported as corrupt; keeping max_pixels at or
    # below 2**30 ends this.
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise CorruptImage(
            f"{name} is a {header.format} file that is truncated or corrupt: {exc}"
        ) from exc
    if decoded is None:
        raise CorruptImage(
            f"{name} is a {header.format} file that is truncated or corrupt: "
            "the decoder returned no image"
        )
    _check_size(decoded.shape[1], decoded.shape[0], expected_wh, name)
    return decoded


def _decode_pillow(
    image: ImageFile.ImageFile, header: ImageHeader, name: str
) -> tuple[np.ndarray, bool]:
    """Decodes with Pillow; also says whether Pillow already applied orientation."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptImage(
            f"{name} is a {header.format} file that is truncated or corrupt: {exc}"
        ) from exc

    # Recent Pillow turns a TIFF on loading and then drops its orientation tag.
    turned = (
        header.format == "TIFF"
        and header.orientation != 1
        and _EXIF_ORIENTATION not in image.tag_v2  # type: ignore[attr-defined]
    )
    expected_wh = header.displayed_size_wh if turned else header.size_wh
    _check_size(*image.size, expected_wh, name)

    try:
        return pixels.rgb8_from_pillow(image), turned
    except ValueError as exc:
        raise UnsupportedImage(
            f"{name} is a {header.format} image in mode {header.mode}, which cannot "
            f"be converted to RGB: {exc}"
        ) from exc


def _check_size(
    width: int, height: int, expected_wh: tuple[int, int], name: str
) -> None:
    if (width, height) != expected_wh:
        raise CorruptImage(
            f"{name} is corrupt: its header says {expected_wh[0]}x{expected_wh[1]} "
            f"but {width}x{height} pixels were decoded"
        )


def _stored_size_wh(image: Image.Image) -> tuple[int, int]:
    """Width and height as stored; Pillow reports a TIFF's as displayed."""
    if image.format == "TIFF":
        tags = image.tag_v2  # type: ignore[attr-defined]
        return tags[_TIFF_IMAGE_WIDTH], tags[_TIFF_IMAGE_LENGTH]
    return image.size


def _is_deep_colour_tiff(image: Image.Image) -> bool:
    if image.format != "TIFF":
        return False
    tags = image.tag_v2  # type: ignore[attr-defined]
    bits = tags.get(_TIFF_BITS_PER_SAMPLE, ())
    if isinstance(bits, int):
        bits = (bits,)
    is_rgb = tags.get(_TIFF_PHOTOMETRIC) == _TIFF_PHOTOMETRIC_RGB
    return is_rgb and len(bits) >= 3 and all(bit == 16 for bit in bits)


def _png_gray_key(image: Image.Image, data: bytes) -> int | None:
    """The transparent gray value of a gray PNG, in the scale libpng decodes to."""
    if image.format != "PNG" or data[_PNG_IHDR_COLOUR_TYPE] != _PNG_COLOUR_TYPE_GRAY:
        return None
    key = image.info.get("transparency")
    if not isinstance(key, int):
        return None

    bit_depth = data[_PNG_IHDR_BIT_DEPTH]
    if bit_depth >= 8:
        return key
    # libpng stretches 1, 2 and 4-bit gray to 0..255.
    return key * (255 // ((1 << bit_depth) - 1))


def _orientation(image: Image.Image, data: bytes, name: str) -> int:
    try:
        if image.format == "PNG":
            # Pillow's PNG getexif() would decode every pixel to reach an eXIf
            # chunk stored after the image data.
            exif = Image.Exif()
            exif.load(
                image.info.get("exif") or signatures.png_chunk(data, b"eXIf") or b""
            )
        else:
            exif = image.getexif()
        value = exif.get(_EXIF_ORIENTATION, 1)
    except Exception as exc:
        logger.warning(
            "%s has unreadable EXIF data (%s); orientation 1 used", name, exc
        )
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _unreadable(data: bytes, name: str, exc: Exception) -> DecodeError:
    """The error for bytes that Pillow cannot open as any decoded format."""
    format_name = signatures.decoded_format(data)
    if format_name is not None:
        return CorruptImage(
            f"{name} starts like a {format_name} file but its header cannot be "
            f"read: truncated or corrupt ({exc})"
        )

    decoded = ", ".join(defaults.DECODE_FORMATS)
    other_format = signatures.undecoded_format(data)
    if other_format is not None:
        return UnsupportedImage(
            f"{name} is a {other_format} image, which is not decoded; the decoded "
            f"formats are {decoded}"
        )
    return NotAnImage(
        f"{name} is not an image: expected the signature of one of {decoded}, "
        f"got {signatures.describe_start(data)}"
    )


def _pixels_text(count: int) -> str:
    if count >= 1_000_000_000:
        return f"{count / 1_000_000_000:.1f} gigapixels"
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f} megapixels"
    return f"{count} pixels"
