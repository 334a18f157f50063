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
  otherwise), every decoder fails when its data runs out, the decoded size must
  equal the header's, and PNG is decoded by libpng (through OpenCV), which also
  rejects a zlib stream that ends before the last row and a file cut before IEND.
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

import codecs
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
from segbatch.workers import pixels

logger = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_EXIF_ORIENTATION = 0x0112
_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PHOTOMETRIC = 262
_TIFF_PHOTOMETRIC_RGB = 2
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IHDR_BIT_DEPTH = 24  # byte offsets from the start of the file
_PNG_IHDR_COLOUR_TYPE = 25
_PNG_COLOUR_TYPE_GRAY = 0
_PREVIEW_BYTES = 40  # of an unrecognised object, quoted in its error message
_PREVIEW_MIN_TEXT_CHARS = 4  # fewer readable characters are shown as bytes

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (_PNG_SIGNATURE, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
)

_JPEG_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
# IMREAD_UNCHANGED keeps 16-bit samples and alpha and ignores EXIF orientation.
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
        turned = False
        if header.format in ("JPEG", "MPO") and header.mode in ("L", "RGB"):
            rgb = _decode_opencv(data, _JPEG_FLAGS, header, name)
        elif header.format == "PNG" or _is_deep_colour_tiff(image):
            decoded = _decode_opencv(data, _RAW_FLAGS, header, name)
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
    data: bytes, flags: int, header: ImageHeader, name: str
) -> np.ndarray:
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
    _check_size(decoded.shape[1], decoded.shape[0], header.size_wh, name)
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
            exif.load(image.info.get("exif") or _png_chunk(data, b"eXIf") or b"")
        else:
            exif = image.getexif()
        value = exif.get(_EXIF_ORIENTATION, 1)
    except Exception as exc:
        logger.warning(
            "%s has unreadable EXIF data (%s); orientation 1 used", name, exc
        )
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_chunk(data: bytes, chunk_type: bytes) -> bytes | None:
    """The payload of the first PNG chunk of ``chunk_type``, read without decoding."""
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        found = data[position + 4 : position + 8]
        if found == chunk_type:
            return data[position + 8 : position + 8 + length]
        if found == b"IEND":
            return None
        position += 12 + length  # length, type, payload, CRC
    return None


def _unreadable(data: bytes, name: str, exc: Exception) -> DecodeError:
    """The error for bytes that Pillow cannot open as any decoded format."""
    for signature, format_name in _SIGNATURES:
        if data.startswith(signature):
            return CorruptImage(
                f"{name} starts like a {format_name} file but its header cannot be "
                f"read: truncated or corrupt ({exc})"
            )
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return CorruptImage(
            f"{name} starts like a WEBP file but cannot be read: truncated or "
            f"corrupt ({exc})"
        )

    supported = ", ".join(defaults.DECODE_FORMATS)
    unsupported = _unsupported_format(data)
    if unsupported is not None:
        return UnsupportedImage(
            f"{name} is a {unsupported} image, which is not decoded; the decoded "
            f"formats are {supported}"
        )
    return NotAnImage(
        f"{name} is not an image: expected the signature of one of {supported}, "
        f"got {_preview(data)}"
    )


def _unsupported_format(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", errors="replace")
        return f"HEIF/AVIF (ISO media brand {brand!r})"
    for signature, format_name in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return format_name
    return None


def _preview(data: bytes) -> str:
    """How ``data`` starts: quoted text, or hexadecimal bytes."""
    head = data[:_PREVIEW_BYTES]
    # An incremental decoder leaves out a character cut at the end of head.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(head).removeprefix("\ufeff")
    readable = len(text)
    for index, char in enumerate(text):
        if char == "\ufffd" or not (char.isprintable() or char.isspace()):
            readable = index
            break
    if readable >= _PREVIEW_MIN_TEXT_CHARS:
        return f"text starting with {text[:readable].strip()!r} ({len(data)} bytes)"
    return f"bytes starting with {head[:16].hex(' ')} ({len(data)} bytes)"


def _pixels_text(count: int) -> str:
    if count >= 1_000_000_000:
        return f"{count / 1_000_000_000:.1f} gigapixels"
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f} megapixels"
    return f"{count} pixels"
