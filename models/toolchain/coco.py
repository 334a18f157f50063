"""COCO-style scoring of instance segmentation on a YOLO-format labelled split.

Ground truth comes from YOLO segmentation labels (``class x1 y1 x2 y2 ...``,
normalised): each polygon is filled at the image's own resolution with
``cv2.fillPoly``, which also restores a hole that the label carries through a
zero-width cut, and stored as a COCO RLE. Predictions are given the same way, as a
class, a score, a box and an RLE mask at the original resolution, so every model
variant is scored by one code path.

Figures, all fractions in [0, 1]:

- ``map50_95``, ``map50``, ``map75``: COCO average precision (area range "all",
  up to 100 detections per image), over IoU 0.50:0.95, at 0.50 and at 0.75.
- ``precision`` and ``recall``: at the deployment confidence
  (``defaults.CONFIDENCE_THRESHOLD``) and IoU 0.5. Within each image and class the
  detections, best score first, are matched greedily to the unmatched ground truth
  instance they overlap most; counts are summed over all images and classes.

Box figures use box IoU, mask figures use mask IoU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from segbatch import defaults

logger = logging.getLogger(__name__)

MATCH_IOU = 0.5  # the overlap that makes a true positive for precision and recall
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
FAMILIES = ("box", "mask")
METRICS = ("map50_95", "map50", "map75", "precision", "recall")

# The first three entries of COCOeval's summary: AP over 0.50:0.95, at 0.50, at 0.75.
_COCO_STAT_KEYS = {"map50_95": "AP_all", "map50": "AP_50", "map75": "AP_75"}


@dataclass(frozen=True)
class LabelledImage:
    """One image of a split, with the id its annotations refer to."""

    image_id: int
    path: Path
    size_wh: tuple[int, int]


@dataclass(frozen=True)
class ScoredInstance:
    """One predicted instance in original image pixels; ``mask_rle`` is a COCO RLE."""

    class_id: int
    score: float
    box_xyxy: tuple[float, float, float, float]
    mask_rle: dict[str, Any]


@dataclass
class GroundTruth:
    """A labelled split as a COCO dataset dictionary plus the images behind it."""

    class_names: tuple[str, ...]
    images: list[LabelledImage]
    dataset: dict[str, Any]

    def subset(self, count: int) -> GroundTruth:
        """The first ``count`` images and their annotations."""
        return self.select(image.image_id for image in self.images[:count])

    def select(self, image_ids: Iterable[int]) -> GroundTruth:
        """The images of ``image_ids`` and their annotations."""
        kept = set(image_ids)
        dataset = dict(self.dataset)
        dataset["images"] = [i for i in self.dataset["images"] if i["id"] in kept]
        dataset["annotations"] = [
            a for a in self.dataset["annotations"] if a["image_id"] in kept
        ]
        images = [image for image in self.images if image.image_id in kept]
        return GroundTruth(self.class_names, images, dataset)


def read_class_names(data_dir: Path) -> tuple[str, ...]:
    """The class names of a dataset written by ``dataset.write_dataset``."""
    meta_path = data_dir / "dataset.json"
    try:
        return tuple(json.loads(meta_path.read_text())["classes"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"expected a dataset.json with a 'classes' list in {data_dir}: {exc}"
        ) from exc


def read_yolo_split(
    data_dir: Path, split: str = "val", *, limit: int | None = None
) -> GroundTruth:
    """Read ``images/<split>`` and ``labels/<split>`` of a YOLO dataset as COCO.

    Images are taken in sorted file-name order; ``limit`` keeps the first ones.
    """
    class_names = read_class_names(data_dir)
    images_dir = data_dir / "images" / split
    labels_dir = data_dir / "labels" / split
    paths = sorted(
        p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise ValueError(f"expected images in {images_dir}, found none")
    if limit is not None:
        paths = paths[:limit]

    images: list[LabelledImage] = []
    annotations: list[dict[str, Any]] = []
    for image_id, path in enumerate(paths, start=1):
        with Image.open(path) as opened:
            size_wh = (int(opened.width), int(opened.height))
        images.append(LabelledImage(image_id, path, size_wh))

        label_path = labels_dir / f"{path.stem}.txt"
        lines = label_path.read_text().splitlines() if label_path.exists() else []
        for line in lines:
            if not line.strip():
                continue
            class_id, polygon_xy = parse_label_line(line, size_wh)
            rle = mask_to_rle(polygon_mask(polygon_xy, size_wh))
            annotations.append(
                _annotation(len(annotations) + 1, image_id, class_id, rle)
            )

    dataset = {
        "images": [
            {
                "id": i.image_id,
                "file_name": i.path.name,
                "width": i.size_wh[0],
                "height": i.size_wh[1],
            }
            for i in images
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in enumerate(class_names)],
    }
    logger.info(
        "read %d images and %d instances from %s",
        len(images),
        len(annotations),
        images_dir,
    )
    return GroundTruth(class_names, images, dataset)


def parse_label_line(line: str, size_wh: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The class id and the ``(N, 2)`` pixel xy polygon of one YOLO label line."""
    values = line.split()
    if len(values) < 7 or len(values) % 2 == 0:
        raise ValueError(
            "expected 'class x1 y1 x2 y2 x3 y3 ...' (at least three points), "
            f"got {len(values)} fields: {line[:80]!r}"
        )
    normalised = np.asarray(values[1:], np.float64).reshape(-1, 2)
    return int(values[0]), normalised * np.asarray(size_wh, np.float64)


def polygon_mask(polygon_xy: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Fill one pixel-xy polygon into a bool ``(H, W)`` mask (even-odd holes kept)."""
    width, height = size_wh
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon_xy).astype(np.int32)], 1)
    return mask.astype(bool)


def polygons_mask(
    polygons_xy: Sequence[np.ndarray], holes: Sequence[bool], size_wh: tuple[int, int]
) -> np.ndarray:
    """Fill outer rings and clear holes, in order, into a bool ``(H, W)`` mask."""
    width, height = size_wh
    mask = np.zeros((height, width), np.uint8)
    for polygon, is_hole in zip(polygons_xy, holes, strict=True):
        if len(polygon) >= 3:
            points = np.round(np.asarray(polygon)).astype(np.int32)
            cv2.fillPoly(mask, [points], 0 if is_hole else 1)
    return mask.astype(bool)


def mask_to_rle(mask_hw: np.ndarray) -> dict[str, Any]:
    """A COCO compressed RLE of a bool mask, with ``counts`` as text (JSON-ready)."""
    from faster_coco_eval.core import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask_hw.astype(np.uint8)))
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def rle_area_and_box(rle: Mapping[str, Any]) -> tuple[int, list[float]]:
    """The pixel area and the ``[x, y, w, h]`` box of an RLE mask."""
    from faster_coco_eval.core import mask as mask_util

    return int(mask_util.area(dict(rle))), [
        float(v) for v in mask_util.toBbox(dict(rle))
    ]


def _annotation(
    annotation_id: int, image_id: int, class_id: int, rle: dict[str, Any]
) -> dict[str, Any]:
    area, box_xywh = rle_area_and_box(rle)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": class_id,
        "segmentation": rle,
        "area": area,
        "bbox": box_xywh,
        "iscrowd": 0,
    }


def ground_truth_as_predictions(truth: GroundTruth) -> dict[int, list[ScoredInstance]]:
    """Every ground truth instance as a prediction of score 1 (a perfect model)."""
    predictions: dict[int, list[ScoredInstance]] = {
        i.image_id: [] for i in truth.images
    }
    for ann in truth.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        predictions[ann["image_id"]].append(
            ScoredInstance(
                ann["category_id"], 1.0, (x, y, x + w, y + h), ann["segmentation"]
            )
        )
    return predictions


def score(
    truth: GroundTruth,
    predictions: Mapping[int, Sequence[ScoredInstance]],
    *,
    confidence: float = defaults.CONFIDENCE_THRESHOLD,
) -> dict[str, dict[str, float]]:
    """Box and mask figures (see the module docstring) of predictions per image id."""
    figures: dict[str, dict[str, float]] = {}
    for family in FAMILIES:
        results = [
            _result_entry(image_id, instance, family)
            for image_id, instances in predictions.items()
            for instance in instances
        ]
        figures[family] = _coco_average_precision(truth, results, family)
        figures[family].update(
            _precision_recall(truth, predictions, family, confidence)
        )
    return figures


def _result_entry(
    image_id: int, instance: ScoredInstance, family: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "image_id": image_id,
        "category_id": instance.class_id,
        "score": float(instance.score),
    }
    if family == "box":
        x1, y1, x2, y2 = instance.box_xyxy
        entry["bbox"] = [x1, y1, x2 - x1, y2 - y1]
    else:
        entry["segmentation"] = instance.mask_rle
    return entry


def _coco_average_precision(
    truth: GroundTruth, results: list[dict[str, Any]], family: str
) -> dict[str, float]:
    from faster_coco_eval import COCO, COCOeval_faster

    if not results:
        return dict.fromkeys(_COCO_STAT_KEYS, 0.0)
    coco_truth = COCO(truth.dataset, use_deepcopy=True, print_function=logger.debug)
    coco_results = coco_truth.loadRes(results)
    evaluator = COCOeval_faster(
        coco_truth,
        coco_results,
        iouType="bbox" if family == "box" else "segm",
        print_function=logger.debug,
    )
    evaluator.run()
    stats = evaluator.stats_as_dict
    return {name: max(0.0, stats[key]) for name, key in _COCO_STAT_KEYS.items()}


def _precision_recall(
    truth: GroundTruth,
    predictions: Mapping[int, Sequence[ScoredInstance]],
    family: str,
    confidence: float,
) -> dict[str, float]:
    from faster_coco_eval.core import mask as mask_util

    truth_by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in truth.dataset["annotations"]:
        truth_by_image.setdefault(ann["image_id"], []).append(ann)

    true_positives = false_positives = false_negatives = 0
    for image in truth.images:
        kept = [p for p in predictions.get(image.image_id, []) if p.score >= confidence]
        annotations = truth_by_image.get(image.image_id, [])
        for class_id in range(len(truth.class_names)):
            found = sorted(
                (p for p in kept if p.class_id == class_id), key=lambda p: -p.score
            )
            wanted = [a for a in annotations if a["category_id"] == class_id]
            if not found or not wanted:
                false_positives += len(found)
                false_negatives += len(wanted)
                continue

            if family == "box":
                found_regions: Any = np.array(
                    [
                        [x1, y1, x2 - x1, y2 - y1]
                        for x1, y1, x2, y2 in (p.box_xyxy for p in found)
                    ],
                    np.float64,
                )
                wanted_regions: Any = np.array([a["bbox"] for a in wanted], np.float64)
            else:
                found_regions = [dict(p.mask_rle) for p in found]
                wanted_regions = [dict(a["segmentation"]) for a in wanted]
            ious = np.asarray(
                mask_util.iou(found_regions, wanted_regions, [0] * len(wanted))
            ).reshape(len(found), len(wanted))

            matched = _greedy_matches(ious)
            true_positives += matched
            false_positives += len(found) - matched
            false_negatives += len(wanted) - matched

    predicted = true_positives + false_positives
    actual = true_positives + false_negatives
    return {
        "precision": true_positives / predicted if predicted else 0.0,
        "recall": true_positives / actual if actual else 0.0,
    }


def _greedy_matches(ious_dt_gt: np.ndarray) -> int:
    """How many rows (best score first) find a free column with IoU >= MATCH_IOU."""
    free = np.ones(ious_dt_gt.shape[1], bool)
    matched = 0
    for row in ious_dt_gt:
        candidates = np.where(free & (row >= MATCH_IOU), row, -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= MATCH_IOU:
            free[best] = False
            matched += 1
    return matched
