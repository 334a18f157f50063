"""Decoding: candidates, NMS and masks, as Ultralytics' predict decodes them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from segbatch import defaults
from segbatch.workers.letterbox import letterbox_geometry
from segbatch.workers.postprocess import (
    class_aware_nms,
    nms,
    postprocess,
    select_candidates,
)
from tests.support.naive_masks import naive_masks_nhw

# --- NMS ------------------------------------------------------------------------------


def brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list:
    """Greedy NMS pair by pair, in Python floats."""

    def iou(a, b) -> float:
        width = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
        height = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        inter = width * height
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else float("nan")

    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    suppressed = set()
    keep = []
    for position, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[position + 1 :]:
            if j not in suppressed and iou(boxes[i], boxes[j]) > threshold:
                suppressed.add(j)
    return keep


def random_boxes(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered boxes, so that many overlap; a few repeated exactly."""
    centres = rng.uniform(0, 200, (count, 2))
    centres[: count // 4] = centres[:1]
    sizes = rng.uniform(0, 60, (count, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    if count > 3:
        boxes[-2:] = boxes[1]
    scores = rng.uniform(0, 1, count)
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("count", [0, 1, 2, 40, 120])
@pytest.mark.parametrize("seed", range(4))
def test_nms_keeps_what_pairwise_greedy_suppression_keeps(seed, count, threshold):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, count)

    kept = nms(boxes, scores, threshold)

    assert kept.tolist() == brute_force_nms(boxes.tolist(), scores.tolist(), threshold)


@pytest.mark.parametrize("max_keep", [0, 1, 5, 1000])
def test_nms_stopped_early_keeps_the_best_of_the_full_result(max_keep):
    boxes, scores = random_boxes(np.random.default_rng(7), 200)

    kept = nms(boxes, scores, 0.5, max_keep=max_keep)

    assert kept.tolist() == nms(boxes, scores, 0.5)[:max_keep].tolist()


def test_identical_boxes_of_different_classes_do_not_suppress_each_other():
    boxes = np.array([[10, 10, 50, 50]] * 4, np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    class_ids = np.array([0, 1, 0, 2])

    kept = class_aware_nms(boxes, scores, class_ids, 0.7)

    assert kept.tolist() == [0, 1, 3]


def test_class_agnostic_nms_keeps_one_of_overlapping_boxes_of_different_classes():
    protos = np.ones((1, 80, 80), np.float32)
    prediction = prediction_of(
        [
            [100, 100, 60, 60, 0.9, 0.0, 1.0],  # class 0
            [102, 101, 60, 60, 0.0, 0.8, 1.0],  # the same object, class 1
            [250, 250, 40, 40, 0.0, 0.7, 1.0],  # apart, class 1
        ]
    )
    geometry = letterbox_geometry((320, 320), (320, 320))

    per_class = postprocess(prediction, protos, geometry, num_classes=2)
    agnostic = postprocess(
        prediction, protos, geometry, num_classes=2, class_agnostic=True
    )

    np.testing.assert_allclose(per_class.scores, [0.9, 0.8, 0.7])
    np.testing.assert_allclose(agnostic.scores, [0.9, 0.7])
    assert agnostic.class_ids.tolist() == [0, 1]


# --- Candidates -----------------------------------------------------------------------


def prediction_of(columns: list[list[float]]) -> np.ndarray:
    return np.array(columns, np.float32).T


def test_candidates_take_the_best_class_strictly_above_the_confidence():
    prediction = prediction_of(
        [
            [50, 60, 20, 10, 0.1, 0.8, 1.0],
            [50, 60, 20, 10, 0.25, 0.2, 2.0],  # exactly at the threshold
            [10, 10, 4, 4, 0.3, 0.3, 3.0],  # a tie goes to the first class
        ]
    )

    found = select_candidates(prediction, num_classes=2, confidence=0.25)

    assert found.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(found.scores, [0.8, 0.3])
    np.testing.assert_array_equal(found.boxes_xyxy, [[40, 55, 60, 65], [8, 8, 12, 12]])
    np.testing.assert_array_equal(found.coefficients, [[1.0], [3.0]])


def test_only_the_highest_scoring_candidates_enter_nms():
    scores = np.linspace(0.3, 0.9, 50, dtype=np.float32)
    prediction = np.zeros((4 + 1 + 1, 50), np.float32)
    prediction[4] = scores

    found = select_candidates(prediction, 1, 0.25, max_candidates=10)

    np.testing.assert_array_equal(np.sort(found.scores), np.sort(scores)[-10:])


# --- Masks ----------------------------------------------------------------------------


def smooth_protos(rng: np.random.Generator, count: int, size_hw) -> np.ndarray:
    """Prototypes with structure at several scales, like a trained model's."""
    coarse = rng.normal(size=(count, size_hw[0] // 8 + 1, size_hw[1] // 8 + 1))
    fine = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    fine = fine[:, : size_hw[0], : size_hw[1]]
    return (fine + 0.3 * rng.normal(size=fine.shape)).astype(np.float32)


def planted_prediction(rng, input_hw, num_classes, num_masks, count) -> np.ndarray:
    """Non-overlapping boxes of distinct scores, so every one survives NMS."""
    grid = int(np.ceil(np.sqrt(count)))
    cell_h, cell_w = input_hw[0] / grid, input_hw[1] / grid
    columns = []
    for index in range(count):
        row, col = divmod(index, grid)
        centre = ((col + 0.5) * cell_w, (row + 0.5) * cell_h)
        size = (cell_w * rng.uniform(0.4, 0.95), cell_h * rng.uniform(0.4, 0.95))
        scores = np.zeros(num_classes)
        scores[index % num_classes] = 0.95 - 0.01 * index
        coefficients = rng.normal(size=num_masks)
        columns.append([*centre, *size, *scores, *coefficients])
    # Boxes that leave the input on each side.
    columns.append([2, 2, 30, 30, *([0.4] * num_classes), *rng.normal(size=num_masks)])
    last = [input_hw[1] - 3, input_hw[0] - 3, 40, 40]
    columns.append([*last, *([0.35] * num_classes), *rng.normal(size=num_masks)])
    return np.array(columns, np.float32).T


@pytest.mark.parametrize(
    "input_hw",
    [pytest.param((320, 320), id="in320"), pytest.param((256, 384), id="in")],
)
@pytest.mark.parametrize(
    "source_hw",
    [
        pytest.param((240, 320), id="smaller"),
        pytest.param((320, 320), id="same"),
        pytest.param((9, 17), id="tiny"),
        pytest.param((1, 400), id="one-row"),
        pytest.param((1500, 2000), id="large"),
        pytest.param((2000, 700), id="tall"),
        # Sizes where rounding the sample positions twice would move some onto
        # exactly half-way between two rows.
        pytest.param((1930, 860), id="half-way-rows"),
        # Prototypes upsampled 2x before the padding is cut (1x and 4x occur above).
        pytest.param((640, 632), id="upsampled-twice"),
    ],
)
def test_windowed_masks_equal_full_frame_masks(source_hw, input_hw):
    rng = np.random.default_rng(sum(source_hw) + input_hw[1])
    num_classes, num_masks = 3, 8
    protos = smooth_protos(rng, num_masks, (input_hw[0] // 4, input_hw[1] // 4))
    prediction = planted_prediction(rng, input_hw, num_classes, num_masks, 6)
    geometry = letterbox_geometry(source_hw, input_hw)

    found = postprocess(prediction, protos, geometry, num_classes=num_classes)

    candidates = select_candidates(prediction, num_classes, 0.25)
    order = np.argsort(-candidates.scores, kind="stable")
    expected_boxes = geometry.boxes_to_source(candidates.boxes_xyxy[order])
    expected, has_pixels = naive_masks_nhw(
        candidates.coefficients[order], protos, expected_boxes, source_hw
    )
    assert len(found) == int(has_pixels.sum()) > 0
    np.testing.assert_array_equal(found.masks_nhw(source_hw), expected[has_pixels])
    np.testing.assert_array_equal(found.boxes_xyxy, expected_boxes[has_pixels])
    np.testing.assert_array_equal(found.scores, candidates.scores[order][has_pixels])


def test_a_detection_without_mask_pixels_is_dropped():
    protos = np.ones((1, 80, 80), np.float32)
    prediction = prediction_of(
        [
            [100, 100, 50, 50, 0.9, 1.0],  # positive logits: a mask
            [250, 250, 50, 50, 0.8, -1.0],  # negative logits: no mask
        ]
    )
    geometry = letterbox_geometry((320, 320), (320, 320))

    found = postprocess(prediction, protos, geometry, num_classes=1)

    np.testing.assert_allclose(found.scores, [0.9])
    assert found.masks[0].area_px == 50 * 50


def test_at_most_max_det_detections_are_returned_best_first():
    rng = np.random.default_rng(3)
    prediction = planted_prediction(rng, (320, 320), 2, 4, 25)
    protos = np.ones((4, 80, 80), np.float32)
    prediction[6:] = np.abs(prediction[6:])  # every mask has pixels

    found = postprocess(
        prediction,
        protos,
        letterbox_geometry((320, 320), (320, 320)),
        num_classes=2,
        max_det=5,
    )

    assert len(found) == 5
    assert np.all(np.diff(found.scores) <= 0)


def test_a_prediction_that_does_not_fit_the_class_count_is_refused():
    prediction = np.zeros((4 + 3 + 32, 2100), np.float32)
    protos = np.zeros((32, 80, 80), np.float32)
    geometry = letterbox_geometry((320, 320), (320, 320))

    with pytest.raises(ValueError, match=r"4 \+ 4 classes \+ 32 mask coefficients"):
        postprocess(prediction, protos, geometry, num_classes=4)


def test_masks_of_a_large_image_take_memory_by_object_size_not_image_size():
    rng = np.random.default_rng(5)
    prediction = planted_prediction(rng, (320, 320), 4, 32, 50)
    prediction[:4, :50] *= np.array([[1], [1], [0.3], [0.3]], np.float32)  # small
    protos = smooth_protos(rng, 32, (80, 80))
    # A constant prototype that dominates: every mask has pixels.
    protos[0], prediction[4 + 4], prediction[4 + 4 + 1 :] = 1.0, 5.0, 0.01
    geometry = letterbox_geometry((3000, 4000), (320, 320))
    full_frame_bytes = 3000 * 4000 * np.dtype(np.float32).itemsize

    tracemalloc.start()
    try:
        found = postprocess(prediction, protos, geometry, num_classes=4)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Every box that keeps a pixel on the image keeps its mask.
    candidates = select_candidates(prediction, 4, 0.25)
    kept = class_aware_nms(
        candidates.boxes_xyxy, candidates.scores, candidates.class_ids, 0.7, 300
    )
    boxes = np.ceil(geometry.boxes_to_source(candidates.boxes_xyxy[kept]))
    on_image = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert len(found) == int(on_image.sum()) > 40
    assert peak_bytes < full_frame_bytes / 4


def test_the_default_thresholds_are_those_of_ultralytics_predict():
    assert defaults.CONFIDENCE_THRESHOLD == 0.25
    assert defaults.IOU_THRESHOLD == 0.7
    assert defaults.MAX_DETECTIONS == 300
    assert defaults.NMS_MAX_CANDIDATES == 30_000
    assert defaults.NMS_CLASS_OFFSET_PX == 7680
