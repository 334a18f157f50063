"""Binary masks to polygons, keeping every part and every hole.

Coordinates are those of the boxes: the image spans ``[0, W] x [0, H]`` and the pixel
in column ``c``, row ``r`` is the unit square ``[c, c + 1) x [r, r + 1)``. Rings run
along pixel edges: a pixel belongs to a region when its centre lies inside the ring,
so a ring's area is about its region's pixel count. An outer ring encloses its part,
a hole ring the background pixels of its hole.

A part is an 8-connected component of the mask; a hole is a 4-connected background
region that a part encloses, as OpenCV's contour following sees them. A part whose
outer border encloses fewer than ``MIN_POLYGON_AREA_PX`` pixels, or a hole of fewer
background pixels, is dropped (a dropped hole is filled).

Each border is traced through the centres of its region's outermost pixels,
simplified with Douglas-Peucker at ``POLYGON_EPSILON_PX``, then moved outward by half
a pixel onto the pixel edges. Simplifying before moving keeps a shortcut that passes
less than half a pixel inside the border from losing the pixels it cuts. Unsimplified,
the rings give back the mask exactly wherever no border touches itself (two pixels
of a region meeting only at a corner).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from segbatch import defaults

_HALF_PX = 0.5
# Vertices where a border turns back by more than this (cosine between the normals
# of its edges) get a square cap instead of a far-reaching mitre.
_MITRE_LIMIT_COS = -0.5
_REVERSAL_TOLERANCE = 1e-9
_FILLED = 2  # flood-fill value, distinct from the 0 and 1 of a mask


def mask_to_polygons(
    mask_hw: np.ndarray,
    offset_xy: tuple[int, int] = (0, 0),
    *,
    epsilon_px: float = defaults.POLYGON_EPSILON_PX,
    min_area_px: float = defaults.MIN_POLYGON_AREA_PX,
) -> tuple[list[np.ndarray], list[bool]]:
    """Polygons of a boolean mask whose top-left pixel is at ``offset_xy``.

    Returns:
        ``(N, 2)`` float32 xy rings in image coordinates, each part's outer ring
        followed by its holes, parts in raster order of their first pixel; and for
        each ring whether it is a hole.
    """
    if mask_hw.size == 0:
        return [], []
    mask = np.ascontiguousarray(mask_hw, dtype=np.uint8)
    # Unsimplified borders: each starts at a known pixel (see _hole_region).
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return [], []
    links = hierarchy[0]

    parts = []
    for index, (_, _, _, parent) in enumerate(links):
        if parent == -1 and _large_enough(contours[index], min_area_px):
            x, y = contours[index][0, 0]
            parts.append(((int(y), int(x)), index))
    parts.sort()

    # Contour points are pixel indices; pixel centres lie half a pixel further.
    origin = np.array(offset_xy, np.float64) + _HALF_PX
    polygons: list[np.ndarray] = []
    holes: list[bool] = []
    for _, index in parts:
        polygons.append(_outline(contours[index], epsilon_px, origin))
        holes.append(False)
        for hole_contour in _hole_rings(mask, contours, links, index, min_area_px):
            polygons.append(_outline(hole_contour, epsilon_px, origin))
            holes.append(True)
    return polygons, holes


def polygons_to_mask(
    polygons: list[np.ndarray],
    polygon_holes: list[bool],
    size_hw: tuple[int, int],
    offset_xy: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Rasterise rings into a ``size_hw`` boolean mask whose top-left pixel is at
    ``offset_xy``: each pixel whose centre a ring encloses, rings painted in order,
    holes erasing. The inverse of ``mask_to_polygons`` up to simplification.
    """
    canvas = np.zeros(size_hw, bool)
    origin = np.array(offset_xy, np.float64) + _HALF_PX
    for ring, is_hole in zip(polygons, polygon_holes, strict=True):
        for row, start, stop in _spans(ring.astype(np.float64) - origin, size_hw):
            canvas[row, start:stop] = not is_hole
    return canvas


def _spans(ring: np.ndarray, size_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Runs ``(row, first column, end column)`` of the pixels whose centres (at
    integer coordinates here) lie inside a ring, by the even-odd rule; a centre on
    a left or top edge is inside, on a right or bottom edge outside."""
    start_xy, end_xy = ring, np.roll(ring, -1, axis=0)
    low_y = np.minimum(start_xy[:, 1], end_xy[:, 1])
    high_y = np.maximum(start_xy[:, 1], end_xy[:, 1])
    first_rows = np.clip(np.ceil(low_y), 0, size_hw[0]).astype(np.int64)
    end_rows = np.clip(np.ceil(high_y), 0, size_hw[0]).astype(np.int64)
    counts = end_rows - first_rows
    edges = np.repeat(np.arange(len(ring)), counts)
    if len(edges) == 0:
        return []
    rows = np.repeat(first_rows, counts) + (
        np.arange(len(edges)) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    x0, y0 = start_xy[edges, 0], start_xy[edges, 1]
    x1, y1 = end_xy[edges, 0], end_xy[edges, 1]
    crossings = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)

    order = np.lexsort((crossings, rows))
    rows, crossings = rows[order], crossings[order]
    starts = np.clip(np.ceil(crossings[0::2]), 0, size_hw[1]).astype(np.int64)
    stops = np.clip(np.ceil(crossings[1::2]), 0, size_hw[1]).astype(np.int64)
    return list(zip(rows[0::2].tolist(), starts.tolist(), stops.tolist(), strict=True))


def _large_enough(contour: np.ndarray, min_area_px: float) -> bool:
    """Whether an outer border encloses at least ``min_area_px`` pixels, holes
    included.

    The count lies between the polygon's area and its bounding box's; pixels are
    counted only when the minimum falls in between.
    """
    x, y, width, height = cv2.boundingRect(contour)
    if width * height < min_area_px:
        return False
    if cv2.contourArea(contour) >= min_area_px:
        return True
    canvas = np.zeros((height, width), np.uint8)
    cv2.drawContours(canvas, [contour - np.array([x, y], np.int32)], 0, 1, -1)
    return bool(np.count_nonzero(canvas) >= min_area_px)


def _hole_rings(
    mask: np.ndarray,
    contours: Sequence[np.ndarray],
    links: np.ndarray,
    part: int,
    min_area_px: float,
) -> list[np.ndarray]:
    """The borders of the background pixels of each large enough hole of a part,
    in raster order of their first pixel."""
    found = []
    child = links[part][2]
    while child != -1:
        region, corner_xy = _hole_region(mask, contours[child])
        if np.count_nonzero(region) >= min_area_px:
            ring, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            start_x, start_y = contours[child][0, 0]
            found.append(((int(start_y), int(start_x)), ring[0] + corner_xy))
        child = links[child][0]
    return [ring for _, ring in sorted(found, key=lambda item: item[0])]


def _hole_region(mask: np.ndarray, border: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected background region inside a hole border, within the border's
    bounding box, and the box's corner.

    OpenCV starts a hole border at the part pixel just left of the hole's first
    pixel in raster order, so that pixel seeds the region.
    """
    x, y, width, height = cv2.boundingRect(border)
    background = 1 - mask[y : y + height, x : x + width]
    start_x, start_y = border[0, 0]
    seed = (int(start_x) + 1 - x, int(start_y) - y)
    cv2.floodFill(background, None, seed, _FILLED, flags=4)
    region = (background == _FILLED).astype(np.uint8)
    return region, np.array([x, y], np.int32)


def _outline(contour: np.ndarray, epsilon_px: float, origin: np.ndarray) -> np.ndarray:
    """A traced border, simplified and moved onto the pixel edges, as float32 xy."""
    chain = _corners(contour.reshape(-1, 2))
    simplified = cv2.approxPolyDP(chain.reshape(-1, 1, 2), epsilon_px, closed=True)
    if len(simplified) >= 3:
        chain = simplified.reshape(-1, 2)
    return (_grow(chain.astype(np.float64), _HALF_PX) + origin).astype(np.float32)


def _grow(ring: np.ndarray, distance: float) -> np.ndarray:
    """Move every edge of a closed ring ``distance`` outward (inward if negative).

    A ring of one or two distinct points (a pixel, a straight one-pixel line)
    becomes the rectangle around them, ``distance`` away on every side.
    """
    keep = np.any(ring != np.roll(ring, -1, axis=0), axis=1)
    ring = ring[keep] if keep.any() else ring[:1]
    if len(ring) <= 2:
        start, end = ring[0], ring[-1]
        length = float(np.linalg.norm(end - start))
        along = (end - start) / length if length else np.array([1.0, 0.0])
        across = np.array([-along[1], along[0]])
        back, ahead = start - distance * along, end + distance * along
        side = distance * across
        return np.array([back - side, ahead - side, ahead + side, back + side])

    edges = np.roll(ring, -1, axis=0) - ring  # edge i runs from vertex i to i + 1
    tangents = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    # Outward is to the right of travel for a ring that runs clockwise on screen.
    clockwise = _signed_area(ring) > 0
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    if clockwise:
        normals = -normals
    normals_in, tangents_in = np.roll(normals, 1, axis=0), np.roll(tangents, 1, axis=0)

    cosines = np.sum(normals_in * normals, axis=1)
    turns = tangents_in[:, 0] * tangents[:, 1] - tangents_in[:, 1] * tangents[:, 0]
    convex = (turns > 0) == clockwise
    capped = convex & (cosines < _MITRE_LIMIT_COS)

    # Each vertex becomes its mitre point, or the two corners of a square cap; a
    # mitre into a sharp inner corner is kept within the mitre limit's length.
    # A border that turns straight back into itself (where it touches itself) has
    # no mitre: its vertex moves along the outgoing edge's normal.
    reversed_ = 1 + cosines < _REVERSAL_TOLERANCE
    with np.errstate(divide="ignore", invalid="ignore"):
        mitres = (normals_in + normals) / (1 + cosines)[:, None]
    mitres[reversed_] = normals[reversed_]
    lengths = np.linalg.norm(mitres, axis=1, keepdims=True)
    longest = 1 / np.sqrt((1 + _MITRE_LIMIT_COS) / 2)
    mitres = np.where(lengths > longest, mitres / lengths * longest, mitres)
    first = np.where(capped[:, None], normals_in + tangents_in, mitres)
    second = normals - tangents
    points = np.stack([first, second], axis=1) * distance + ring[:, None, :]
    used = np.stack([np.ones_like(capped), capped], axis=1)
    return points[used]


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area; positive when the ring runs clockwise on screen (y down)."""
    x, y = ring[:, 0], ring[:, 1]
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2)


def _corners(ring: np.ndarray) -> np.ndarray:
    """The vertices of a closed pixel chain where its direction changes."""
    if len(ring) < 3:
        return ring
    steps = np.diff(ring, axis=0, append=ring[:1])
    turns = np.any(steps != np.roll(steps, 1, axis=0), axis=1)
    return ring[turns] if turns.any() else ring[:1]
