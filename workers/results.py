"""What segmenting one image produces, independent of where it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One object found in an image, in the image's displayed pixel coordinates.

    ``polygons`` holds one ``(N, 2)`` float32 array of xy vertices per part of the
    mask; a part with a hole is given as its outer ring followed by its inner rings,
    each a separate array, with ``polygon_holes[i]`` true where ``polygons[i]`` is a
    hole.
    """

    class_id: int
    class_name: str
    score: float
    box_xyxy: tuple[float, float, float, float]
    polygons: list[np.ndarray]
    polygon_holes: list[bool]
    mask_area_px: int


@dataclass
class ImageResult:
    """The outcome for one image URI: detections, or why there are none."""

    uri: str
    etag: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    detections: list[Detection] = field(default_factory=list)
    failure_kind: str | None = None
    failure_message: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure_kind is None
