"""What an object's bytes are, read from its first bytes without decoding anything.

Used to say why bytes that no decoder opens are refused: the signature of a decoded
format means a damaged file, the signature of another image format means an
unsupported one, and anything else is quoted as text or bytes.
"""

from __future__ import annotations

import codecs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_PREVIEW_BYTES = 40  # of an unrecognised object, quoted in its error message
_PREVIEW_HEX_BYTES = 16
_PREVIEW_MIN_TEXT_CHARS = 4  # fewer readable characters are shown as bytes

_DECODED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (PNG_SIGNATURE, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_UNDECODED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),  # bare codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),  # bare codestream
)


def decoded_format(data: bytes) -> str | None:
    """The decoded format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, format_name in _DECODED_SIGNATURES:
        if data.startswith(signature):
            return format_name
    return None


def undecoded_format(data: bytes) -> str | None:
    """The image format, not one decoded here, whose signature ``data`` starts with."""
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", errors="replace")
        return f"HEIF/AVIF (ISO media brand {brand!r})"
    for signature, format_name in _UNDECODED_SIGNATURES:
        if data.startswith(signature):
            return format_name
    return None


def describe_start(data: bytes) -> str:
    """How ``data`` starts, for an error message: quoted text, or hexadecimal bytes."""
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
    hex_bytes = head[:_PREVIEW_HEX_BYTES].hex(" ")
    return f"bytes starting with {hex_bytes} ({len(data)} bytes)"


def png_chunk(data: bytes, chunk_type: bytes) -> bytes | None:
    """The payload of the first PNG chunk of ``chunk_type`` before IEND, if any."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        found = data[position + 4 : position + 8]
        if found == chunk_type:
            return data[position + 8 : position + 8 + length]
        if found == b"IEND":
            return None
        position += 12 + length  # length, type, payload, CRC
    return None
