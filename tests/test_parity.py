"""The workers find what Ultralytics' own predict finds, with the same model.

Each fixture in ``tests/fixtures/parity/`` holds Ultralytics' predictions for a model
version (written by ``segbatch.models.toolchain.parity``, whose docstring has the
command). The model is read from ``$SEGBATCH_MODELS_DIR``, else the repository's
``models/``; a fixture whose model is absent there is skipped, and one made from a
different build of the model fails until it is regenerated. Both sides run the FP16
IR computed in 32-bit floats, as the fixture records, so that the test holds on any
x86 CPU; post-processing is the same code for every precision.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segbatch.errors import ModelNotFound
from segbatch.models.registry import resolve
from segbatch.models.toolchain.parity import FIXTURE_DIR, REPO_ROOT, pixels_sha256
from segbatch.workers.decode import decode_image
from segbatch.workers.model import INFERENCE_PRECISION, SegmentationModel
from segbatch.workers.postprocess import Segmentation

# A stuck inference queue must fail the test, not hang the suite.
pytestmark = pytest.mark.timeout(300)

MODELS_DIR = Path(os.environ.get("SEGBATCH_MODELS_DIR", REPO_ROOT / "models"))
REGENERATE = "YOLO_OFFLINE=1 .venv/bin/python -m segbatch.models.toolchain.parity {ref}"
SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE_PX = 1.0
MIN_MASK_IOU = 0.98
MIN_BOX_IOU_TO_MATCH = 0.5


def parity_cases() -> list[Any]:
    cases = []
    for path in sorted(FIXTURE_DIR.glob("*.json")):
        fixture = json.loads(path.read_text())
        for image in fixture["images"]:
            case_id = f"{path.stem}:{Path(image['path']).name}"
            cases.append(pytest.param(fixture, image, id=case_id))
    return cases


@pytest.fixture(scope="module")
def models() -> dict[str, SegmentationModel]:
    return {}


def model_for(
    fixture: dict[str, Any], models: dict[str, SegmentationModel]
) -> SegmentationModel:
    ref = fixture["model"]
    if ref not in models:
        try:
            version = resolve(ref, MODELS_DIR)
        except ModelNotFound:
            pytest.skip(f"model {ref} is not in {MODELS_DIR} (SEGBATCH_MODELS_DIR)")
        recorded = version.metadata.get("sha256", {})
        for relative, sha256 in fixture["ir_sha256"].items():
            if recorded.get(relative) != sha256:
                pytest.fail(
                    f"the parity fixture of {ref} was made from another build "
                    f"({relative} differs); regenerate it with: "
                    + REGENERATE.format(ref=ref)
                )
        assert fixture["computed_in"] == INFERENCE_PRECISION
        assert fixture.get("retina_masks"), (
            f"the parity fixture of {ref} holds input-size masks; the workers make "
            "them at the image's resolution. Regenerate it with: "
            + REGENERATE.format(ref=ref)
        )
        models[ref] = SegmentationModel.load(version, precision=fixture["precision"])
    return models[ref]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    height = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else float(np.array_equal(a, b))


def match(
    reference: list[dict[str, Any]], ours: Segmentation
) -> list[tuple[dict[str, Any], int]]:
    """Pair each reference detection with ours of its class and the highest box
    IoU, one to one, best reference score first."""
    free = set(range(len(ours)))
    pairs = []
    for detection in sorted(reference, key=lambda d: -d["score"]):
        box = np.array(detection["box_xyxy"])
        same_class = [i for i in free if ours.class_ids[i] == detection["class_id"]]
        best = max(
            same_class, key=lambda i: box_iou(box, ours.boxes_xyxy[i]), default=None
        )
        assert best is not None and box_iou(box, ours.boxes_xyxy[best]) >= (
            MIN_BOX_IOU_TO_MATCH
        ), f"no detection of ours matches {detection['class_id']=} at {box}"
        free.remove(best)
        pairs.append((detection, best))
    return pairs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


@pytest.mark.parametrize(("fixture", "image"), parity_cases())
def test_detections_match_ultralytics_predict(fixture, image, models):
    from faster_coco_eval.core import mask as mask_util

    model = model_for(fixture, models)
    path = REPO_ROOT / image["path"]
    image_rgb = decode_image(path.read_bytes(), name=str(path))
    assert pixels_sha256(image_rgb) == image["pixels_sha256"], (
        f"{path} decodes to other pixels than when the fixture was made; "
        "regenerate it with: " + REGENERATE.format(ref=fixture["model"])
    )

    [ours] = model.segment_masks(
        [image_rgb],
        confidence=fixture["confidence"],
        iou=fixture["iou"],
        max_det=fixture["max_det"],
    )

    reference = image["detections"]
    assert len(ours) == len(reference)
    for detection, index in match(reference, ours):
        assert ours.class_ids[index] == detection["class_id"]
        assert abs(ours.scores[index] - detection["score"]) <= SCORE_TOLERANCE
        np.testing.assert_allclose(
            ours.boxes_xyxy[index], detection["box_xyxy"], atol=BOX_TOLERANCE_PX
        )
        expected_mask = mask_util.decode(detection["mask_rle"]).astype(bool)
        our_mask = ours.masks[index].paste(image_rgb.shape[:2])
        assert mask_iou(our_mask, expected_mask) >= MIN_MASK_IOU


def test_there_is_a_parity_fixture_for_the_default_model():
    from segbatch import defaults

    name, _, version = defaults.DEFAULT_MODEL.partition("/")
    assert (FIXTURE_DIR / f"{name}-{version}.json").is_file()
