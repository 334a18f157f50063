"""Windowed mask postprocessing against the full-frame way, side by side.

Run from the repository root::

    .venv/bin/python -m tests.benchmarks.bench_postprocess

For each scene, both ways decode the same synthetic model outputs (candidates and
NMS are shared; the masks differ in method only) and must give the same masks. The
full-frame way resamples one detection at a time over the whole image, which is
already gentler on memory than all detections at once.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from segbatch.workers.letterbox import LetterboxGeometry, letterbox_geometry
from segbatch.workers.postprocess import class_aware_nms, postprocess, select_candidates
from tests.support.naive_masks import naive_masks_nhw

NUM_CLASSES = 4
NUM_MASKS = 32
INPUT_HW = (320, 320)


@dataclass(frozen=True)
class Scene:
    name: str
    source_hw: tuple[int, int]
    detections: int
    box_fraction: float  # box side relative to its grid cell


SCENES = (
    Scene("640x480, 20 objects", (480, 640), 20, 0.8),
    Scene("4000x3000, 50 small objects", (3000, 4000), 50, 0.5),
    Scene("4000x3000, 10 large objects", (3000, 4000), 10, 0.9),
)


def synthetic_outputs(scene: Scene, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A prediction with ``scene.detections`` separate boxes and smooth prototypes
    under which every mask has pixels."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(scene.detections)))
    cell_h, cell_w = INPUT_HW[0] / grid, INPUT_HW[1] / grid
    prediction = np.zeros((4 + NUM_CLASSES + NUM_MASKS, 2100), np.float32)
    for index in range(scene.detections):
        row, col = divmod(index, grid)
        prediction[0:4, index] = (
            (col + 0.5) * cell_w,
            (row + 0.5) * cell_h,
            cell_w * scene.box_fraction,
            cell_h * scene.box_fraction,
        )
        prediction[4 + index % NUM_CLASSES, index] = 0.9 - 0.005 * index
        prediction[4 + NUM_CLASSES :, index] = rng.normal(size=NUM_MASKS) * 0.3
        prediction[4 + NUM_CLASSES, index] = 2.0
    coarse = rng.normal(size=(NUM_MASKS, 11, 11))
    protos = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :80, :80]
    protos[0] = 1.0
    return prediction, protos.astype(np.float32)


def windowed(prediction, protos, geometry: LetterboxGeometry) -> np.ndarray:
    found = postprocess(prediction, protos, geometry, num_classes=NUM_CLASSES)
    return np.array([crop.area_px for crop in found.masks])


def full_frame(prediction, protos, geometry: LetterboxGeometry) -> np.ndarray:
    candidates = select_candidates(prediction, NUM_CLASSES, 0.25)
    kept = class_aware_nms(
        candidates.boxes_xyxy, candidates.scores, candidates.class_ids, 0.7, 300
    )
    boxes_source_xyxy = geometry.boxes_to_source(candidates.boxes_xyxy[kept])
    areas = []
    for row, index in enumerate(kept):
        masks, has_pixels = naive_masks_nhw(
            candidates.coefficients[index : index + 1],
            protos,
            boxes_source_xyxy[row : row + 1],
            geometry.source_size_hw,
        )
        if has_pixels[0]:
            areas.append(int(np.count_nonzero(masks[0])))
    return np.array(areas)


def measure(run: Callable[[], np.ndarray], repeats: int) -> tuple[float, float, Any]:
    run()  # warm-up
    best_s = min(_timed(run) for _ in range(repeats))
    tracemalloc.start()
    try:
        result = run()
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return best_s, peak_bytes / 2**20, result


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"{'scene':32} {'windowed':>16} {'full-frame':>18} {'speed-up':>9}")
    for scene in SCENES:
        prediction, protos = synthetic_outputs(scene)
        geometry = letterbox_geometry(scene.source_hw, INPUT_HW)
        outputs = (prediction, protos, geometry)
        ours_s, ours_mib, ours = measure(partial(windowed, *outputs), args.repeats)
        naive_s, naive_mib, naive = measure(partial(full_frame, *outputs), args.repeats)
        assert np.array_equal(ours, naive), "the two ways disagree"
        print(
            f"{scene.name:32} {ours_s * 1e3:7.1f} ms {ours_mib:5.0f} MiB "
            f"{naive_s * 1e3:9.1f} ms {naive_mib:5.0f} MiB {naive_s / ours_s:8.1f}x"
        )


if __name__ == "__main__":
    main()
