"""Masks become polygons with every part and every hole, in image pixel coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segbatch import defaults
from segbatch.workers.polygons import mask_to_polygons, polygons_to_mask


def disc(size_hw, centre_xy, radius) -> np.ndarray:
    canvas = np.zeros(size_hw, np.uint8)
    cv2.circle(canvas, centre_xy, radius, 1, -1)
    return canvas.astype(bool)


def ring(size_hw, centre_xy, outer, inner) -> np.ndarray:
    return disc(size_hw, centre_xy, outer) & ~disc(size_hw, centre_xy, inner)


def star(size_hw, centre_xy, outer, inner, points=5) -> np.ndarray:
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    vertices = np.stack(
        [centre_xy[0] + radii * np.sin(angles), centre_xy[1] - radii * np.cos(angles)],
        axis=1,
    )
    canvas = np.zeros(size_hw, np.uint8)
    cv2.fillPoly(canvas, [np.rint(vertices).astype(np.int32)], 1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


SIZE_HW = (200, 260)
SHAPES = {
    "disc": disc(SIZE_HW, (100, 100), 60),
    "ring": ring(SIZE_HW, (100, 100), 70, 35),
    "star": star(SIZE_HW, (130, 100), 90, 40),
    "two-parts": disc(SIZE_HW, (60, 60), 40) | disc(SIZE_HW, (190, 130), 50),
    "ring-with-island": ring(SIZE_HW, (120, 100), 90, 50)
    | disc(SIZE_HW, (120, 100), 20),
    "touching-the-border": disc(SIZE_HW, (0, 0), 80) | disc(SIZE_HW, (259, 199), 60),
}


def test_a_ring_keeps_its_hole():
    polygons, holes = mask_to_polygons(SHAPES["ring"])

    assert holes == [False, True]
    outer, inner = (cv2.contourArea(ring_xy) for ring_xy in polygons)
    assert outer > inner > 0


def test_a_two_part_mask_keeps_both_parts():
    polygons, holes = mask_to_polygons(SHAPES["two-parts"])

    assert holes == [False, False]
    assert all(len(part) >= 3 for part in polygons)


def test_an_island_inside_a_hole_follows_the_part_that_encloses_it():
    polygons, holes = mask_to_polygons(SHAPES["ring-with-island"])

    assert holes == [False, True, False]
    outer, hole, island = (cv2.contourArea(ring_xy) for ring_xy in polygons)
    assert outer > hole > island


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_rasterising_the_polygons_gives_back_the_mask(name):
    mask = SHAPES[name]

    polygons, holes = mask_to_polygons(mask)

    assert iou(polygons_to_mask(polygons, holes, SIZE_HW), mask) >= 0.98


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_unsimplified_polygons_cover_exactly_the_mask_pixels(name):
    mask = SHAPES[name]

    polygons, holes = mask_to_polygons(mask, epsilon_px=0)

    np.testing.assert_array_equal(polygons_to_mask(polygons, holes, SIZE_HW), mask)


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_mask_gives_finite_rings_that_rasterise_back_closely(seed):
    mask = np.random.default_rng(seed).random((40, 50)) > 0.45

    polygons, holes = mask_to_polygons(mask, epsilon_px=0, min_area_px=0)

    assert all(np.isfinite(ring).all() and len(ring) >= 3 for ring in polygons)
    # Borders that touch themselves at a corner are where rings and pixels differ.
    assert iou(polygons_to_mask(polygons, holes, mask.shape), mask) >= 0.95


def test_rings_run_along_pixel_edges_in_image_coordinates():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True  # columns 2..4, rows 1..2

    polygons, holes = mask_to_polygons(mask, offset_xy=(100, 50))

    assert holes == [False]
    assert polygons[0].dtype == np.float32
    corners = {tuple(vertex) for vertex in polygons[0].tolist()}
    assert corners == {(102, 51), (105, 51), (105, 53), (102, 53)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_ring_encloses_about_as_much_area_as_its_pixels(name):
    mask = SHAPES[name]

    polygons, holes = mask_to_polygons(mask)

    area = sum(
        -cv2.contourArea(ring) if hole else cv2.contourArea(ring)
        for ring, hole in zip(polygons, holes, strict=True)
    )
    assert area == pytest.approx(np.count_nonzero(mask), rel=0.02)


def test_a_box_local_mask_rasterises_back_at_its_offset():
    mask = SHAPES["star"]

    polygons, holes = mask_to_polygons(mask, offset_xy=(30, 7))

    size_hw = (SIZE_HW[0] + 7, SIZE_HW[1] + 30)
    placed = polygons_to_mask(polygons, holes, size_hw)
    assert iou(placed[7:, 30:], mask) >= 0.98
    assert not placed[:7].any() and not placed[:, :30].any()


def test_parts_and_holes_under_the_minimum_area_are_dropped():
    clean = ring((60, 60), (30, 30), 25, 10)
    mask = clean.copy()
    mask[2, 55] = True  # a one-pixel part outside the ring
    mask[30, 13] = False  # a one-pixel hole in the ring's body

    polygons, holes = mask_to_polygons(mask, epsilon_px=0)

    assert defaults.MIN_POLYGON_AREA_PX > 1
    assert holes == [False, True]
    np.testing.assert_array_equal(polygons_to_mask(polygons, holes, (60, 60)), clean)


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(np.zeros((10, 10), bool), id="empty"),
        pytest.param(np.zeros((0, 0), bool), id="no-pixels-at-all"),
    ],
)
def test_an_empty_mask_has_no_polygons(mask):
    assert mask_to_polygons(mask) == ([], [])


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param((2, slice(3, 35)), id="straight"),
        pytest.param((slice(0, 5), 7), id="vertical"),
        pytest.param((np.arange(5), np.arange(10, 15)), id="diagonal"),
        pytest.param((2, 20), id="one-pixel"),
    ],
)
def test_a_one_pixel_thin_part_rasterises_back_to_its_pixels(pixels):
    mask = np.zeros((5, 40), bool)
    mask[pixels] = True

    polygons, holes = mask_to_polygons(mask, min_area_px=1)

    assert holes == [False]
    np.testing.assert_array_equal(polygons_to_mask(polygons, holes, (5, 40)), mask)
