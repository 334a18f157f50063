"""Decoding: every awkward input gets its one outcome, on every decoder path."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

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
from segbatch.workers.decode import ImageHeader, decode_image, read_header

CASES = Path(__file__).resolve().parent / "cases" / "images"
NAME = "s3://bucket/deep/prefix/ünïcode key+%#?.jpg"
BACKGROUND = np.asarray(defaults.ALPHA_BACKGROUND_RGB, dtype=np.float64)
RNG_SEED = 20240607


# --- helpers ----------------------------------------------------------------------


def _decode(data: bytes, **kwargs: int) -> np.ndarray:
    rgb = decode_image(data, name=NAME, **kwargs)
    assert rgb.dtype == np.uint8
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous and rgb.flags.writeable
    return rgb


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _cv2_encode(ext: str, array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(ext, array)
    assert ok
    return encoded.tobytes()


def _scaled_16(values: np.ndarray) -> np.ndarray:
    """The by-value rule, written independently: round(v * 255 / 65535)."""
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _over_background(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The compositing rule, written independently in floating point."""
    a = alpha.astype(np.float64)[..., None]
    blended = (rgb.astype(np.float64) * a + BACKGROUND * (255 - a)) / 255
    return np.round(blended).astype(np.uint8)


def _gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def _noise(shape: tuple[int, ...], high: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    values = rng.integers(0, high + 1, shape, dtype=np.int64)
    flat = values.reshape(-1)
    flat[:2] = (0, high)  # both ends of the range are always present
    return values.astype(dtype)


def _png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + payload)
    return (
        struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", crc)
    )


def _blocks_image() -> np.ndarray:
    """An asymmetric 48x32 RGB picture of 8x8 blocks, each a different colour."""
    rng = np.random.default_rng(RNG_SEED)
    colours = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((8, 8, 1), dtype=np.uint8))


# --- every listed extension is a decoded format ------------------------------------


@pytest.mark.parametrize("extension", sorted(defaults.IMAGE_EXTENSIONS))
def test_every_extension_the_listing_keeps_is_decoded(extension: str) -> None:
    fmt = Image.registered_extensions()[f".{extension}"]
    stored = _blocks_image()

    # Lossless settings where a format has them; 24 colours fit a GIF palette.
    params = {"JPEG": {"quality": 100, "subsampling": 0}, "WEBP": {"lossless": True}}

    rgb = _decode(_save(Image.fromarray(stored), fmt, **params.get(fmt, {})))

    assert fmt in defaults.DECODE_FORMATS
    assert rgb.shape == stored.shape
    tolerance = 2 if fmt == "JPEG" else 0
    assert np.abs(rgb.astype(int) - stored).max() <= tolerance


# --- the shared cases ---------------------------------------------------------------


def _expect_orientation_6(data: bytes) -> None:
    stored = Image.open(io.BytesIO(data))
    assert stored.size == (640, 360)
    rgb = _decode(data)
    assert rgb.shape == (640, 360, 3)
    expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    assert np.abs(rgb.astype(int) - expected).max() <= 2
    header = read_header(data, name=NAME, max_pixels=defaults.MAX_IMAGE_PIXELS)
    assert header == ImageHeader("JPEG", (640, 360), "RGB", 6)
    assert header.displayed_size_wh == (360, 640)


def _expect_cmyk(data: bytes) -> None:
    rgb = _decode(data)
    # OpenCV converts Adobe CMYK on its own; its mean colour is the reference.
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    mean, reference_mean = rgb.mean(axis=(0, 1)), reference.mean(axis=(0, 1))
    assert np.abs(mean - reference_mean).max() < 2
    assert np.abs(mean - (255 - reference_mean)).max() > 20  # not inverted


def _expect_gray_16bit(data: bytes) -> None:
    raw = np.asarray(Image.open(io.BytesIO(data)))
    assert raw.dtype.itemsize == 2 and raw.max() == 65535
    rgb = _decode(data)
    np.testing.assert_array_equal(rgb, _gray3(_scaled_16(raw)))
    assert rgb.max() == 255


def _expect_rgba(data: bytes) -> None:
    rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    rgb = _decode(data)
    partial = np.argwhere((rgba[..., 3] > 0) & (rgba[..., 3] < 255))
    y, x = partial[len(partial) // 2]
    expected = _over_background(rgba[y, x, :3], rgba[y, x, 3])
    np.testing.assert_array_equal(rgb[y, x], expected)
    np.testing.assert_array_equal(rgb, _over_background(rgba[..., :3], rgba[..., 3]))


def _expect_palette(data: bytes) -> None:
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(_decode(data), expected)


def _expect_error(
    kind: type[DecodeError], *words: str
) -> Callable[[bytes], DecodeError]:
    def check(data: bytes) -> DecodeError:
        with pytest.raises(kind) as caught:
            decode_image(data, name=NAME)
        message = str(caught.value)
        assert NAME in message
        for word in words:
            assert word in message
        return caught.value

    return check


def _expect_not_an_image(data: bytes) -> None:
    start = data[:20].decode("utf-8")
    _expect_error(NotAnImage, "not an image", start)(data)


def _expect_huge(data: bytes) -> None:
    width, height = struct.unpack(">II", data[16:24])
    _expect_error(
        ImageTooLarge,
        f"{width}x{height}",
        f"{width * height / 1e9:.1f} gigapixels",
        f"{defaults.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels",
    )(data)


CASE_OUTCOMES: dict[str, Callable[[bytes], object]] = {
    "exif-orientation-6.jpg": _expect_orientation_6,
    "cmyk.jpg": _expect_cmyk,
    "gray-16bit.png": _expect_gray_16bit,
    "rgba.png": _expect_rgba,
    "palette.png": _expect_palette,
    "truncated.jpg": _expect_error(CorruptImage, "truncated or corrupt"),
    "empty.jpg": _expect_error(EmptyImage, "empty (0 bytes)"),
    "not-an-image.jpg": _expect_not_an_image,
    "huge-40000x40000.png": _expect_huge,
}


def test_every_shared_case_has_an_expected_outcome() -> None:
    assert {path.name for path in CASES.iterdir()} == set(CASE_OUTCOMES)


@pytest.mark.parametrize("filename", sorted(CASE_OUTCOMES))
def test_each_shared_case_gets_its_outcome(filename: str) -> None:
    CASE_OUTCOMES[filename]((CASES / filename).read_bytes())


def test_a_huge_png_is_refused_with_bounded_memory_and_the_process_lives() -> None:
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from segbatch.errors import ImageTooLarge\n"
        "from segbatch.workers.decode import decode_image\n"
        "data = Path(sys.argv[1]).read_bytes()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_image(data, name='huge')\n"
        "except ImageTooLarge:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('not refused')\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(CASES / "huge-40000x40000.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    peak_growth_kib = int(done.stdout.strip())
    # Decoding it would take 1.6 GB for one byte a pixel, 4.8 GB as RGB.
    assert peak_growth_kib < 32 * 1024


# --- EXIF orientation on every decoder path ---------------------------------------


def _with_orientation(fmt: str, orientation: int) -> bytes:
    image = Image.fromarray(_blocks_image())
    exif = Image.Exif()
    exif[0x0112] = orientation
    if fmt == "JPEG":
        return _save(image, "JPEG", exif=exif, quality=100, subsampling=0)
    if fmt == "JPEG-CMYK":
        cmyk = image.convert("CMYK")
        return _save(cmyk, "JPEG", exif=exif, quality=100, subsampling=0)
    if fmt == "WEBP":
        return _save(image, "WEBP", exif=exif, lossless=True)
    if fmt == "TIFF-16":
        # v * 257 scales back to exactly v, and its high byte is v as well.
        return _tiff_rgb16(_blocks_image().astype(np.uint16) * 257, orientation)
    return _save(image, fmt, exif=exif)


def _tiff_rgb16(rgb16: np.ndarray, orientation: int) -> bytes:
    """An uncompressed 16-bit RGB TIFF with an orientation tag, which Pillow cannot
    write."""
    height, width, _ = rgb16.shape
    pixels = rgb16.astype("<u2").tobytes()
    entry_count = 11
    bits_offset = 8 + 2 + 12 * entry_count + 4
    pixels_offset = bits_offset + 6

    def short(tag: int, value: int) -> bytes:
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    def long(tag: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, 4, 1, value)

    entries = [
        long(256, width),
        long(257, height),
        struct.pack("<HHII", 258, 3, 3, bits_offset),
        short(259, 1),  # no compression
        short(262, 2),  # RGB
        long(273, pixels_offset),
        short(274, orientation),
        short(277, 3),
        long(278, height),
        long(279, len(pixels)),
        short(284, 1),  # samples interleaved
    ]
    assert len(entries) == entry_count
    ifd = struct.pack("<H", entry_count) + b"".join(entries) + struct.pack("<I", 0)
    bits = struct.pack("<HHH", 16, 16, 16)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bits + pixels


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "JPEG-CMYK", "PNG", "WEBP", "TIFF", "TIFF-16"])
def test_every_exif_orientation_gives_the_displayed_picture(
    fmt: str, orientation: int
) -> None:
    data = _with_orientation(fmt, orientation)

    rgb = _decode(data)

    # Pillow's own decoder and transposition are the reference.
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    expected = np.asarray(shown)
    assert rgb.shape == expected.shape
    tolerance = 2 if fmt.startswith("JPEG") else 0
    assert np.abs(rgb.astype(int) - expected).max() <= tolerance
    header = read_header(data, name=NAME, max_pixels=defaults.MAX_IMAGE_PIXELS)
    assert header.orientation == orientation
    assert header.displayed_size_wh == (rgb.shape[1], rgb.shape[0])


def test_orientation_6_turns_the_stored_picture_clockwise() -> None:
    stored = _blocks_image()
    data = _with_orientation("PNG", 6)

    np.testing.assert_array_equal(_decode(data), np.rot90(stored, k=-1))


def test_an_exif_chunk_after_the_png_pixels_is_read_without_decoding() -> None:
    data = _with_orientation("PNG", 8)
    start = data.index(b"eXIf") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    exif_chunk = data[start : start + 12 + length]
    without = data[:start] + data[start + 12 + length :]
    iend = without.rindex(b"IEND") - 4
    moved = without[:iend] + exif_chunk + without[iend:]

    header = read_header(moved, name=NAME, max_pixels=defaults.MAX_IMAGE_PIXELS)

    assert header.orientation == 8
    np.testing.assert_array_equal(_decode(moved), np.rot90(_blocks_image(), k=1))


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_an_invalid_orientation_counts_as_none(value: int) -> None:
    data = _with_orientation("PNG", value)

    assert read_header(data, name=NAME, max_pixels=10**6).orientation == 1
    np.testing.assert_array_equal(_decode(data), _blocks_image())


# --- pixel modes: every one becomes RGB by the documented rules ---------------------


def _mode_case_rgb16_png() -> tuple[bytes, np.ndarray]:
    rgb16 = _noise((24, 40, 3), 65535, np.uint16)
    return _cv2_encode(".png", rgb16[..., ::-1]), _scaled_16(rgb16)


def _mode_case_rgba16_png() -> tuple[bytes, np.ndarray]:
    rgba16 = _noise((24, 40, 4), 65535, np.uint16)
    data = _cv2_encode(".png", rgba16[..., [2, 1, 0, 3]])
    scaled = _scaled_16(rgba16)
    return data, _over_background(scaled[..., :3], scaled[..., 3])


def _mode_case_rgb16_tiff() -> tuple[bytes, np.ndarray]:
    rgb16 = _noise((24, 40, 3), 65535, np.uint16)
    return _cv2_encode(".tiff", rgb16[..., ::-1]), _scaled_16(rgb16)


def _mode_case_gray16(fmt: str) -> Callable[[], tuple[bytes, np.ndarray]]:
    def build() -> tuple[bytes, np.ndarray]:
        gray16 = _noise((24, 40), 65535, np.uint16)
        image = Image.fromarray(gray16)
        assert image.mode.startswith("I;16")
        return _save(image, fmt), _gray3(_scaled_16(gray16))

    return build


def _mode_case_int32_tiff() -> tuple[bytes, np.ndarray]:
    values = _noise((24, 40), 200_000, np.int32) - 50_000
    image = Image.fromarray(values)
    assert image.mode == "I"
    return _save(image, "TIFF"), _gray3(_scaled_16(np.clip(values, 0, 65535)))


def _mode_case_float_tiff() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    values = rng.uniform(-0.5, 1.5, (24, 40)).astype(np.float32)
    values[0, :3] = (np.nan, 0.0, 1.0)
    image = Image.fromarray(values)
    assert image.mode == "F"
    clipped = np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0, 1)
    return _save(image, "TIFF"), _gray3(np.round(clipped * 255).astype(np.uint8))


def _mode_case_bilevel(fmt: str) -> Callable[[], tuple[bytes, np.ndarray]]:
    def build() -> tuple[bytes, np.ndarray]:
        bits = _noise((24, 40), 1, np.uint8).astype(bool)
        image = Image.fromarray(bits)
        assert image.mode == "1"
        return _save(image, fmt), _gray3(np.where(bits, 255, 0).astype(np.uint8))

    return build


def _mode_case_gray(fmt: str) -> Callable[[], tuple[bytes, np.ndarray]]:
    def build() -> tuple[bytes, np.ndarray]:
        gray = _noise((24, 40), 255, np.uint8)
        params = {"lossless": True} if fmt == "WEBP" else {}
        return _save(Image.fromarray(gray), fmt, **params), _gray3(gray)

    return build


def _mode_case_la_png() -> tuple[bytes, np.ndarray]:
    la = _noise((24, 40, 2), 255, np.uint8)
    data = _save(Image.fromarray(la, "LA"), "PNG")
    return data, _over_background(_gray3(la[..., 0]), la[..., 1])


def _palette_image(transparent: bool) -> Image.Image:
    indices = _noise((24, 40), 15, np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(_noise((16 * 3,), 255, np.uint8).tobytes())
    if transparent:
        image.info["transparency"] = bytes([0, 128, 255] + [255] * 13)
    return image


def _mode_case_palette(fmt: str, transparent: bool) -> Callable[[], tuple]:
    def build() -> tuple[bytes, np.ndarray]:
        image = _palette_image(transparent)
        if fmt == "GIF":
            params = {"transparency": 0} if transparent else {}
            data = _save(image, "GIF", **params)
        else:
            data = _save(image, fmt)
        # Pillow's own palette lookup of the saved file is the reference.
        rgba = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
        assert (rgba[..., 3] < 255).any() == transparent
        return data, _over_background(rgba[..., :3], rgba[..., 3])

    return build


def _mode_case_rgba(fmt: str, **params: object) -> Callable[[], tuple]:
    def build() -> tuple[bytes, np.ndarray]:
        rgba = _noise((24, 40, 4), 255, np.uint8)
        data = _save(Image.fromarray(rgba, "RGBA"), fmt, **params)
        return data, _over_background(rgba[..., :3], rgba[..., 3])

    return build


def _mode_case_colour_key(mode: str) -> Callable[[], tuple]:
    def build() -> tuple[bytes, np.ndarray]:
        if mode == "L":
            source = _noise((24, 40), 7, np.uint8) * 30
            key: object = 60
            opaque = _gray3(source)
            transparent = source == key
        else:
            source = _noise((24, 40, 3), 3, np.uint8) * 80
            key = (80, 160, 0)
            opaque = source
            transparent = (source == np.asarray(key)).all(axis=2)
        assert transparent.any()
        data = _save(Image.fromarray(source), "PNG", transparency=key)
        alpha = np.where(transparent, 0, 255).astype(np.uint8)
        return data, _over_background(opaque, alpha)

    return build


def _mode_case_cmyk_tiff() -> tuple[bytes, np.ndarray]:
    cmyk = _noise((24, 40, 4), 255, np.uint8)
    data = _save(Image.fromarray(cmyk, "CMYK"), "TIFF")
    ink = cmyk.astype(np.float64) / 255
    rgb = 255 * (1 - ink[..., :3]) * (1 - ink[..., 3:])
    return data, np.round(rgb).astype(np.uint8)


MODE_CASES: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
    "16-bit RGB PNG": _mode_case_rgb16_png,
    "16-bit RGBA PNG": _mode_case_rgba16_png,
    "16-bit RGB TIFF": _mode_case_rgb16_tiff,
    "16-bit gray PNG": _mode_case_gray16("PNG"),
    "16-bit gray TIFF": _mode_case_gray16("TIFF"),
    "32-bit integer TIFF": _mode_case_int32_tiff,
    "float TIFF": _mode_case_float_tiff,
    "1-bit PNG": _mode_case_bilevel("PNG"),
    "1-bit TIFF": _mode_case_bilevel("TIFF"),
    "1-bit BMP": _mode_case_bilevel("BMP"),
    "gray PNG": _mode_case_gray("PNG"),
    "gray BMP": _mode_case_gray("BMP"),
    "gray WEBP lossless": _mode_case_gray("WEBP"),
    "gray+alpha PNG": _mode_case_la_png,
    "palette PNG": _mode_case_palette("PNG", transparent=False),
    "palette PNG with transparency": _mode_case_palette("PNG", transparent=True),
    "palette GIF": _mode_case_palette("GIF", transparent=False),
    "palette GIF with transparency": _mode_case_palette("GIF", transparent=True),
    "RGBA PNG": _mode_case_rgba("PNG"),
    "RGBA WEBP": _mode_case_rgba("WEBP", lossless=True, exact=True),
    "RGBA TIFF": _mode_case_rgba("TIFF"),
    "gray PNG with a colour key": _mode_case_colour_key("L"),
    "RGB PNG with a colour key": _mode_case_colour_key("RGB"),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_pixel_mode_becomes_rgb_by_the_documented_rules(case: str) -> None:
    data, expected = MODE_CASES[case]()

    np.testing.assert_array_equal(_decode(data), expected)


def test_cmyk_tiff_becomes_rgb_by_the_ink_formula() -> None:
    data, expected = _mode_case_cmyk_tiff()

    assert np.abs(_decode(data).astype(int) - expected).max() <= 1


def test_a_cmyk_jpeg_round_trips_to_its_rgb_colours_not_inverted() -> None:
    rgb = _blocks_image()
    data = _save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).info.get("adobe")  # Adobe-inverted storage

    decoded = _decode(data).astype(int)

    assert np.abs(decoded - rgb).mean() < 3
    assert np.abs(decoded - (255 - rgb.astype(int))).mean() > 40


# --- truncated and damaged files ----------------------------------------------------


def _encodings() -> dict[str, bytes]:
    rgb = _noise((48, 64, 3), 255, np.uint8)
    image = Image.fromarray(rgb)
    return {
        "JPEG": _save(image, "JPEG"),
        "progressive JPEG": _save(image, "JPEG", progressive=True),
        "CMYK JPEG": _save(image.convert("CMYK"), "JPEG"),
        "PNG": _save(image, "PNG"),
        "16-bit PNG": _cv2_encode(".png", rgb.astype(np.uint16) * 257),
        "WEBP": _save(image, "WEBP"),
        "lossless WEBP": _save(image, "WEBP", lossless=True),
        "GIF": _save(image, "GIF"),
        "TIFF": _save(image, "TIFF"),
        "16-bit TIFF": _cv2_encode(".tiff", rgb.astype(np.uint16) * 257),
        "BMP": _save(image, "BMP"),
    }


@pytest.mark.parametrize("encoding", sorted(_encodings()))
@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_a_truncated_image_is_recorded_as_corrupt(encoding: str, kept: float) -> None:
    data = _encodings()[encoding]
    assert _decode(data).shape == (48, 64, 3)

    _expect_error(CorruptImage, "truncated or corrupt")(data[: int(len(data) * kept)])


def test_a_png_header_alone_is_corrupt_not_another_kind() -> None:
    _expect_error(CorruptImage, "PNG", "truncated or corrupt")(b"\x89PNG\r\n\x1a\n")


def test_a_png_whose_compressed_rows_stop_early_is_corrupt() -> None:
    rgb = _noise((20, 30, 3), 255, np.uint8)
    half_rows = b"".join(b"\x00" + row.tobytes() for row in rgb[:10])
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30, 20, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(half_rows))
        + _png_chunk(b"IEND", b"")
    )

    _expect_error(CorruptImage, "truncated or corrupt")(data)


def test_a_png_cut_before_its_end_chunk_is_corrupt() -> None:
    data = _encodings()["PNG"]

    _expect_error(CorruptImage, "truncated or corrupt")(data[: data.rindex(b"IEND")])


@pytest.mark.xfail(
    strict=True,
    reason="libjpeg only warns when entropy data ends early at a marker; neither "
    "Pillow nor OpenCV reports those warnings",
)
def test_a_jpeg_cut_short_and_closed_with_an_end_marker_is_corrupt() -> None:
    data = _encodings()["JPEG"]

    _expect_error(CorruptImage)(data[: len(data) // 2] + b"\xff\xd9")


# --- not images ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"<!DOCTYPE html><html><head><title>403</title>", "'<!DOCTYPE html><html>"),
        (b'{"error": "AccessDenied"}', '\'{"error": "AccessDenied"}\''),
        (b"\xef\xbb\xbf<?xml version='1.0'?><Error/>", "<?xml version='1.0'?><Error/>"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "'%PDF-1.7"),
        (bytes(range(7, 40)), "07 08 09 0a"),
        (b"\x00" * 64, "00 00 00"),
        (b"\xff\xd8", "ff d8"),
    ],
    ids=["html", "json", "xml with bom", "pdf", "binary", "zeros", "two jpeg bytes"],
)
def test_bytes_without_an_image_signature_say_what_they_look_like(
    data: bytes, shown: str
) -> None:
    _expect_error(NotAnImage, "not an image", shown)(data)


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
        (b"\xff\x4f\xff\x51\x00\x2f\x00\x00", "JPEG 2000"),
        (b"\xff\x0a\xfa\x7f\x01\x90\x08\x06", "JPEG XL"),
    ],
    ids=["heic", "avif", "jpeg 2000", "jpeg xl"],
)
def test_an_image_format_that_is_not_decoded_is_unsupported(
    data: bytes, shown: str
) -> None:
    _expect_error(UnsupportedImage, shown)(data)


# --- the pixel limit is read from the header -----------------------------------------


def _huge_jpeg(width: int, height: int) -> bytes:
    data = bytearray(_save(Image.new("RGB", (16, 16), (10, 20, 30)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _huge_webp() -> bytes:
    data = bytearray(_save(Image.new("RGB", (16, 16)), "WEBP", lossless=True))
    bits_at = data.index(b"VP8L") + 9  # chunk tag, chunk size, signature byte
    bits = int.from_bytes(data[bits_at : bits_at + 4], "little")
    bits = (bits & ~0x0FFFFFFF) | 0x3FFF | (0x3FFF << 14)  # 16384 - 1 for both
    data[bits_at : bits_at + 4] = bits.to_bytes(4, "little")
    return bytes(data)


def _huge_png(width: int, height: int) -> bytes:
    data = _save(Image.new("L", (16, 16)), "PNG")
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return data[:8] + _png_chunk(b"IHDR", header) + data[33:]


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (_huge_jpeg(60000, 60000), "60000x60000 = 3.6 gigapixels"),
        (_huge_webp(), "16384x16384 = 268.4 megapixels"),
        (_huge_png(30000, 20000), "30000x20000 = 600.0 megapixels"),
    ],
    ids=["jpeg", "webp", "png"],
)
def test_a_huge_header_is_refused_before_decoding(data: bytes, size: str) -> None:
    with pytest.raises(ImageTooLarge) as caught:
        read_header(data, name=NAME, max_pixels=defaults.MAX_IMAGE_PIXELS)

    assert size in str(caught.value) and NAME in str(caught.value)
    _expect_error(ImageTooLarge, size, "100.0 megapixels")(data)


@pytest.mark.parametrize(
    ("max_pixels", "refused"), [(199, True), (200, False), (10**6, False)]
)
def test_the_pixel_limit_is_inclusive(max_pixels: int, refused: bool) -> None:
    data = _save(Image.new("RGB", (20, 10)), "PNG")

    if refused:
        with pytest.raises(ImageTooLarge, match="20x10 = 200 pixels"):
            decode_image(data, name=NAME, max_pixels=max_pixels)
    else:
        assert _decode(data, max_pixels=max_pixels).shape == (10, 20, 3)


def test_a_limit_above_pillows_own_is_the_one_that_decides() -> None:
    data = _huge_jpeg(20000, 12000)  # 240 MP: over Pillow's 179 MP error threshold

    header = read_header(data, name=NAME, max_pixels=300_000_000)

    assert header.size_wh == (20000, 12000)


def test_pillows_bomb_error_is_reported_as_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _save(Image.new("RGB", (100, 100)), "PNG")

    _expect_error(ImageTooLarge, "configured limit")(data)


def test_decoding_refuses_to_run_with_truncated_loading_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = _save(Image.new("RGB", (8, 8)), "PNG")

    with pytest.raises(ConfigError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(data, name=NAME)
