"""A reproducible synthetic instance segmentation dataset: shapes on photographs.

Each image is a crop of one of scikit-image's bundled sample photographs with a few
filled shapes painted on it, some overlapping others. There are four classes, chosen
for varied topology: a convex ``ellipse``, a concave ``star``, a ``ring`` with a hole
and a concave ``cross``. Images vary in size and aspect ratio (portrait, landscape,
small, large).

Labels are YOLO segmentation files: one line per instance, ``class x1 y1 x2 y2 ...``
with coordinates normalised to the image size. An instance whose visible region has a
hole (a ring) is written as one polygon that walks the outer contour, crosses to the
hole along a zero-width cut, walks the hole and returns, which is how YOLO's format
carries holes.

Every image is generated from its own seed ``(seed, split, index)``, so the same seed
gives byte-identical files, whatever the order or the number of processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DATASET_VERSION = "shapes-v1"
DEFAULT_SEED = 20261203
CLASS_NAMES: tuple[str, ...] = ("ellipse", "star", "ring", "cross")
SPLIT_IDS = {"train": 0, "val": 1, "demo": 2}

# Sample photographs that scikit-image ships inside its wheel (no download).
BACKGROUND_NAMES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "rocket",
    "text",
)

IMAGE_LONG_SIDE_PX = (240, 1024)
ASPECT_RATIOS_WH = (4 / 3, 3 / 4, 16 / 9, 9 / 16, 1.0, 3 / 2, 2 / 3)
INSTANCES_PER_IMAGE = (2, 6)
INSTANCE_SIZE_FRACTION = (0.16, 0.42)  # of the image's short side
MIN_VISIBLE_FRACTION = 0.55  # an occluded instance keeps at least this much
PLACEMENT_ATTEMPTS = 30
JPEG_QUALITY = 92
POLYGON_EPSILON_PX = 0.6


@dataclass(frozen=True)
class Instance:
    class_id: int
    mask_hw: np.ndarray  # bool, the visible pixels


def load_backgrounds() -> list[np.ndarray]:
    """Load the bundled sample photographs as 3-channel uint8 RGB arrays."""
    from skimage import data  # the toolchain extra; workers never import this

    backgrounds = []
    for name in BACKGROUND_NAMES:
        image = np.asarray(getattr(data, name)())
        if image.dtype != np.uint8:
            image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        backgrounds.append(np.ascontiguousarray(image[:, :, :3]))
    return backgrounds


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + np.arange(n) * 2 * np.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius


def _shape_mask(
    class_id: int, size_wh: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A filled shape of ``class_id`` centred in a canvas of ``size_wh``."""
    width, height = size_wh
    canvas = np.zeros((height, width), np.uint8)
    center = np.array([width / 2, height / 2])
    radius = min(width, height) / 2 * 0.98
    rotation = rng.uniform(0, 2 * np.pi)
    name = CLASS_NAMES[class_id]

    if name == "ellipse":
        axes = (int(radius), int(radius * rng.uniform(0.45, 1.0)))
        cv2.ellipse(
            canvas, tuple(center.astype(int)), axes, np.degrees(rotation), 0, 360, 1, -1
        )
    elif name == "star":
        points = int(rng.integers(5, 8))
        outer = _regular_polygon(points, radius, rotation)
        inner = _regular_polygon(points, radius * rng.uniform(0.4, 0.55), rotation)
        inner = inner @ _rotation(np.pi / points).T
        star = np.empty((2 * points, 2))
        star[0::2], star[1::2] = outer, inner
        cv2.fillPoly(canvas, [np.round(star + center).astype(np.int32)], 1)
    elif name == "ring":
        axes_outer = (int(radius), int(radius * rng.uniform(0.7, 1.0)))
        hole = rng.uniform(0.45, 0.65)
        axes_inner = (int(axes_outer[0] * hole), int(axes_outer[1] * hole))
        angle = np.degrees(rotation)
        cv2.ellipse(canvas, tuple(center.astype(int)), axes_outer, angle, 0, 360, 1, -1)
        cv2.ellipse(canvas, tuple(center.astype(int)), axes_inner, angle, 0, 360, 0, -1)
    elif name == "cross":
        arm = rng.uniform(0.28, 0.4) * radius
        square = radius / np.sqrt(2) * 1.3
        bars = [
            np.array([[-square, -arm], [square, -arm], [square, arm], [-square, arm]]),
            np.array([[-arm, -square], [arm, -square], [arm, square], [-arm, square]]),
        ]
        for bar in bars:
            rotated = bar @ _rotation(rotation).T + center
            cv2.fillPoly(canvas, [np.round(rotated).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown class id {class_id}")
    return canvas.astype(bool)


def _rotation(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def _texture(size_wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A shaded colour fill: a random hue with a linear gradient and fine noise."""
    width, height = size_wh
    hsv = np.array([rng.uniform(0, 180), rng.uniform(90, 255), rng.uniform(110, 255)])
    color = cv2.cvtColor(hsv.astype(np.uint8)[None, None], cv2.COLOR_HSV2RGB)[0, 0]
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs / max(width, 1) - 0.5) * direction[0] + (ys / max(height, 1) - 0.5) * (
        direction[1]
    )
    shade = 1.0 + ramp * rng.uniform(0.2, 0.6)
    noise = rng.normal(0, 6, size=(height, width, 1))
    fill = color[None, None, :].astype(np.float32) * shade[:, :, None] + noise
    return np.clip(fill, 0, 255)


def _background(
    backgrounds: list[np.ndarray], size_wh: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    source = backgrounds[int(rng.integers(len(backgrounds)))]
    src_h, src_w = source.shape[:2]
    crop = rng.uniform(0.5, 1.0)
    crop_w, crop_h = max(int(src_w * crop), 16), max(int(src_h * crop), 16)
    x0 = int(rng.integers(0, src_w - crop_w + 1))
    y0 = int(rng.integers(0, src_h - crop_h + 1))
    patch = source[y0 : y0 + crop_h, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    image = cv2.resize(patch, size_wh, interpolation=cv2.INTER_LINEAR)
    image = image.astype(np.float32)
    image = image * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
    return np.clip(image, 0, 255)


def _image_size_wh(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(*IMAGE_LONG_SIDE_PX))
    aspect = ASPECT_RATIOS_WH[int(rng.integers(len(ASPECT_RATIOS_WH)))]
    if aspect >= 1:
        return long_side, max(int(long_side / aspect), 64)
    return max(int(long_side * aspect), 64), long_side


def generate_image(
    backgrounds: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, list[Instance]]:
    """One RGB image and its instances, painted back to front."""
    size_wh = _image_size_wh(rng)
    width, height = size_wh
    image = _background(backgrounds, size_wh, rng)
    instances: list[Instance] = []
    wanted = int(rng.integers(INSTANCES_PER_IMAGE[0], INSTANCES_PER_IMAGE[1] + 1))

    for _ in range(wanted):
        for _attempt in range(PLACEMENT_ATTEMPTS):
            placed = _place(image, instances, size_wh, rng)
            if placed is not None:
                instances = placed
                break

    image_u8 = np.clip(image, 0, 255).astype(np.uint8)
    assert image_u8.shape == (height, width, 3)
    return image_u8, instances


def _place(
    image: np.ndarray,
    instances: list[Instance],
    size_wh: tuple[int, int],
    rng: np.random.Generator,
) -> list[Instance] | None:
    """Paint one more instance on ``image`` unless it would hide too much of another.

    Returns the new list of instances, or ``None`` (and leaves ``image`` alone) when
    the placement is rejected.
    """
    width, height = size_wh
    class_id = int(rng.integers(len(CLASS_NAMES)))
    side = int(min(width, height) * rng.uniform(*INSTANCE_SIZE_FRACTION))
    box_w = max(int(side * rng.uniform(0.8, 1.25)), 12)
    box_h = max(int(side * rng.uniform(0.8, 1.25)), 12)
    if box_w >= width or box_h >= height:
        return None
    x0 = int(rng.integers(0, width - box_w))
    y0 = int(rng.integers(0, height - box_h))

    shape = _shape_mask(class_id, (box_w, box_h), rng)
    mask = np.zeros((height, width), bool)
    mask[y0 : y0 + box_h, x0 : x0 + box_w] = shape
    if mask.sum() < 64:
        return None

    survivors = []
    for instance in instances:
        visible = instance.mask_hw & ~mask
        if visible.sum() < MIN_VISIBLE_FRACTION * instance.mask_hw.sum():
            return None
        if _component_count(visible) != _component_count(instance.mask_hw):
            return None  # an occluder never splits an instance into pieces
        survivors.append(Instance(instance.class_id, visible))

    texture = _texture((box_w, box_h), rng)
    region = image[y0 : y0 + box_h, x0 : x0 + box_w]
    region[shape] = texture[shape]
    return [*survivors, Instance(class_id, mask)]


def _component_count(mask_hw: np.ndarray) -> int:
    count, _ = cv2.connectedComponents(mask_hw.astype(np.uint8), connectivity=8)
    return count - 1


def mask_to_polygon(mask_hw: np.ndarray) -> np.ndarray:
    """One polygon, ``(N, 2)`` float pixel xy, covering a mask's outline and holes.

    Each hole is joined to the outer contour by a zero-width cut between their
    closest points, so that a single polygon filled with ``cv2.fillPoly`` gives back
    the mask with its holes.
    """
    contours, hierarchy = cv2.findContours(
        mask_hw.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    if not contours:
        return np.zeros((0, 2), np.float32)
    rings = [
        cv2.approxPolyDP(c, POLYGON_EPSILON_PX, closed=True)[:, 0, :].astype(np.float32)
        for c in contours
    ]
    outer_index = max(
        (i for i in range(len(rings)) if hierarchy[0][i][3] < 0),
        key=lambda i: cv2.contourArea(contours[i]),
    )
    polygon = rings[outer_index]
    for i, ring in enumerate(rings):
        if i == outer_index or hierarchy[0][i][3] != outer_index:
            continue
        distances = np.linalg.norm(polygon[:, None, :] - ring[None, :, :], axis=2)
        at_outer, at_ring = np.unravel_index(np.argmin(distances), distances.shape)
        walk = np.roll(ring, -at_ring, axis=0)
        polygon = np.concatenate(
            [
                polygon[: at_outer + 1],
                walk,
                walk[:1],
                polygon[at_outer:],
            ]
        )
    return polygon


def label_lines(instances: list[Instance], size_wh: tuple[int, int]) -> list[str]:
    width, height = size_wh
    lines = []
    for instance in instances:
        polygon = mask_to_polygon(instance.mask_hw)
        if len(polygon) < 3:
            continue
        normalised = polygon / np.array([width, height], np.float32)
        coordinates = " ".join(f"{value:.6f}" for value in normalised.reshape(-1))
        lines.append(f"{instance.class_id} {coordinates}")
    return lines


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def iter_split(
    split: str, count: int, seed: int, backgrounds: list[np.ndarray]
) -> Iterator[tuple[int, np.ndarray, list[Instance]]]:
    for index in range(count):
        image, instances = generate_image(backgrounds, image_rng(seed, split, index))
        yield index, image, instances


def write_dataset(
    out_dir: Path,
    *,
    train_count: int = 1200,
    val_count: int = 200,
    seed: int = DEFAULT_SEED,
    progress: Callable[[str, int], None] | None = None,
) -> Path:
    """Write the train and val splits in Ultralytics' layout; return ``data.yaml``."""
    backgrounds = load_backgrounds()
    for split, count in (("train", train_count), ("val", val_count)):
        images_dir = out_dir / "images" / split
        labels_dir = out_dir / "labels" / split
        images_dir.mkdir(parents=True, exist_ok=True)
        labels_dir.mkdir(parents=True, exist_ok=True)
        for index, image, instances in iter_split(split, count, seed, backgrounds):
            stem = f"{index:06d}"
            _write_jpeg(images_dir / f"{stem}.jpg", image)
            size_wh = (image.shape[1], image.shape[0])
            text = "\n".join(label_lines(instances, size_wh))
            (labels_dir / f"{stem}.txt").write_text(text + "\n" if text else "")
            if progress is not None:
                progress(split, index)

    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data_yaml = out_dir / "data.yaml"
    data_yaml.write_text(
        f"path: {out_dir.resolve()}\ntrain: images/train\nval: images/val\n"
        f"names:\n{names}\n"
    )
    meta = {
        "dataset_version": DATASET_VERSION,
        "seed": seed,
        "train": train_count,
        "val": val_count,
        "classes": list(CLASS_NAMES),
    }
    (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("wrote %s to %s (seed %d)", DATASET_VERSION, out_dir, seed)
    return data_yaml


def write_demo_images(out_dir: Path, count: int = 12, seed: int = DEFAULT_SEED) -> None:
    """Write the small set of demo images (a split of their own, never trained on)."""
    backgrounds = load_backgrounds()
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, image, _ in iter_split("demo", count, seed, backgrounds):
        _write_jpeg(out_dir / f"demo-{index:02d}.jpg", image)


def _write_jpeg(path: Path, image_rgb: np.ndarray) -> None:
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(encoded.tobytes())
