"""The awkward inputs of ``tests/cases`` and the outcome each must get.

Every case is uploaded (or copied) under a key that is awkward too, so the same run
also proves that keys with spaces, ``+``, ``%``, ``#``, ``?`` and unicode letters
round-trip from listing to the results table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = REPO / "tests" / "cases" / "images"
DEMO_DIR = REPO / "models" / "demo"


@dataclass(frozen=True)
class Case:
    file: str
    key: str  # the object key (or relative path) it is stored under
    failure_kind: str | None  # None: must be segmented
    message_words: tuple[str, ...] = ()  # the failure message must contain these
    size_wh: tuple[int, int] | None = None  # displayed size, when it is known


CASES = (
    Case(
        "exif-orientation-6.jpg", "cases/rotated 90° cw+exif.jpg", None, (), (360, 640)
    ),
    Case("cmyk.jpg", "cases/colour/cmyk %41 #1.jpg", None),
    Case("gray-16bit.png", "cases/deep/a/b/c/d/e/f/gray 16?bit.png", None),
    Case("rgba.png", "cases/ünïcödé/日本/rgba.png", None),
    Case("palette.png", "cases/palette+mode P.png", None),
    Case("truncated.jpg", "cases/bad/truncated.jpg", "corrupt", ("truncated",)),
    Case("empty.jpg", "cases/bad/empty.jpg", "empty", ("empty",)),
    Case(
        "not-an-image.jpg",
        "cases/bad/not-an-image.jpg",
        "not_an_image",
        ("not an image",),
    ),
    Case(
        "huge-40000x40000.png",
        "cases/bad/huge-40000x40000.png",
        "too_large",
        ("40000x40000",),
    ),
)


def demo_images() -> list[Path]:
    return sorted(DEMO_DIR.glob("*.jpg"))
