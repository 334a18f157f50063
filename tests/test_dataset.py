"""The synthetic shapes dataset: reproducible, and its labels are its pixels."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from segbatch.models.toolchain import dataset
from segbatch.models.toolchain.coco import parse_label_line, polygon_mask

SEED = 4242
TRAIN_IMAGES = 3
VAL_IMAGES = 24
MIN_LABEL_IOU = 0.97
# Below COCO's "small" area a one-pixel outline is too large a share for that IoU;
# there only the outline test holds.
MIN_AREA_FOR_IOU_PX = 32 * 32
MAX_HOLE_FILL = 0.03  # of a ring's hole, filled by its rasterised label


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def backgrounds():
    return dataset.load_backgrounds()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A small dataset written once for the module."""
    root = tmp_path_factory.mktemp("shapes")
    dataset.write_dataset(
        root, train_count=TRAIN_IMAGES, val_count=VAL_IMAGES, seed=SEED
    )
    return root


def test_the_same_seed_writes_byte_identical_files(tmp_path):
    root = tmp_path / "shapes"
    dataset.write_dataset(
        root, train_count=TRAIN_IMAGES, val_count=VAL_IMAGES, seed=SEED
    )
    first = _file_bytes(root)
    shutil.rmtree(root)

    dataset.write_dataset(
        root, train_count=TRAIN_IMAGES, val_count=VAL_IMAGES, seed=SEED
    )

    assert _file_bytes(root) == first
    assert len(first) == 2 * (TRAIN_IMAGES + VAL_IMAGES) + 2  # + data.yaml, json


def test_an_image_does_not_depend_on_the_images_generated_before_it(backgrounds):
    in_sequence = list(dataset.iter_split("val", 4, SEED, backgrounds))

    alone, _ = dataset.generate_image(backgrounds, dataset.image_rng(SEED, "val", 3))

    assert np.array_equal(alone, in_sequence[3][1])


def test_another_seed_gives_other_images(written, tmp_path):
    dataset.write_dataset(
        tmp_path, train_count=TRAIN_IMAGES, val_count=VAL_IMAGES, seed=SEED + 1
    )

    ours, theirs = _file_bytes(written), _file_bytes(tmp_path)
    images = [name for name in ours if name.endswith(".jpg")]
    assert images
    assert all(ours[name] != theirs[name] for name in images)


def _instances_and_labels(root: Path, backgrounds):
    """Each val image's generated instances beside its label file's lines."""
    labels_dir = root / "labels" / "val"
    for index, image, instances in dataset.iter_split(
        "val", VAL_IMAGES, SEED, backgrounds
    ):
        lines = (labels_dir / f"{index:06d}.txt").read_text().splitlines()
        yield image, instances, lines


def _outline(mask_hw: np.ndarray) -> np.ndarray:
    """The pixels within one pixel of a mask's edge, inside or outside."""
    mask_u8 = mask_hw.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return (cv2.dilate(mask_u8, kernel) > 0) & ~(cv2.erode(mask_u8, kernel) > 0)


def test_every_instance_has_a_label_line_that_covers_its_pixels(written, backgrounds):
    checked = large = 0
    for image, instances, lines in _instances_and_labels(written, backgrounds):
        size_wh = (image.shape[1], image.shape[0])
        assert len(lines) == len(instances)

        for instance, line in zip(instances, lines, strict=True):
            class_id, polygon_xy = parse_label_line(line, size_wh)
            label_mask = polygon_mask(polygon_xy, size_wh)
            differing = label_mask ^ instance.mask_hw

            assert class_id == instance.class_id
            assert not (differing & ~_outline(instance.mask_hw)).any()
            if instance.mask_hw.sum() >= MIN_AREA_FOR_IOU_PX:
                union = (label_mask | instance.mask_hw).sum()
                assert 1 - differing.sum() / union >= MIN_LABEL_IOU
                large += 1
            checked += 1
    assert checked > VAL_IMAGES
    assert large > checked // 2


def _hole(mask_hw: np.ndarray) -> np.ndarray:
    """The pixels enclosed by a mask's outer outline that are not the mask."""
    contours, _ = cv2.findContours(
        mask_hw.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    filled = np.zeros(mask_hw.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool) & ~mask_hw


def test_a_ring_label_leaves_its_hole_empty(written, backgrounds):
    ring = dataset.CLASS_NAMES.index("ring")
    holes = 0
    for image, instances, lines in _instances_and_labels(written, backgrounds):
        size_wh = (image.shape[1], image.shape[0])
        for instance, line in zip(instances, lines, strict=True):
            hole = _hole(instance.mask_hw)
            if instance.class_id != ring or hole.sum() == 0:
                continue

            label_mask = polygon_mask(parse_label_line(line, size_wh)[1], size_wh)

            assert (label_mask & hole).sum() <= MAX_HOLE_FILL * hole.sum()
            holes += 1
    assert holes > 0, "no ring with a hole among the generated images"


def test_images_come_in_portrait_and_landscape_and_several_sizes(backgrounds):
    sizes_hw = {
        image.shape[:2]
        for _, image, _ in dataset.iter_split("val", VAL_IMAGES, SEED, backgrounds)
    }

    assert any(height > width for height, width in sizes_hw)
    assert any(width > height for height, width in sizes_hw)
    assert len(sizes_hw) > VAL_IMAGES // 2


def test_every_class_occurs(written):
    class_ids = {
        int(line.split()[0])
        for path in (written / "labels").rglob("*.txt")
        for line in path.read_text().splitlines()
    }

    assert class_ids == set(range(len(dataset.CLASS_NAMES)))
