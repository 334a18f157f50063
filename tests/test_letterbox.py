"""Letterboxing gives the model the pixels Ultralytics' LetterBox would give it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segbatch.workers.letterbox import Letterboxer, letterbox, letterbox_geometry

SIZES_HW = [
    pytest.param((480, 640), id="landscape"),
    pytest.param((640, 480), id="portrait"),
    pytest.param((9, 17), id="tiny-17x9"),
    pytest.param((17, 9), id="tiny-9x17"),
    pytest.param((320, 320), id="exactly-the-input"),
    pytest.param((321, 319), id="one-off"),
    pytest.param((1, 3000), id="one-pixel-thin"),
    pytest.param((4000, 6000), id="huge"),
]
INPUTS_HW = [
    pytest.param((320, 320), id="in320"),
    pytest.param((256, 384), id="in256x384"),
]


def straightforward_letterbox(
    image_rgb: np.ndarray, input_hw: tuple[int, int]
) -> tuple[np.ndarray, int, int, int, int]:
    """The letterbox written out plainly: resize, pad, reorder, scale."""
    height, width = image_rgb.shape[:2]
    ratio = min(input_hw[0] / height, input_hw[1] / width)
    new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
    pad_w, pad_h = (input_hw[1] - new_w) / 2, (input_hw[0] - new_h) / 2
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)

    resized = image_rgb
    if (height, width) != (new_h, new_w):
        resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    tensor = padded.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
    return tensor, new_h, new_w, top, left


def random_image(size_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size_hw, 3), np.uint8)


@pytest.mark.parametrize("input_hw", INPUTS_HW)
@pytest.mark.parametrize("size_hw", SIZES_HW)
def test_the_tensor_equals_a_straightforward_letterbox(size_hw, input_hw):
    image = random_image(size_hw)

    tensor, geometry = letterbox(image, input_hw)
    expected, new_h, new_w, top, left = straightforward_letterbox(image, input_hw)

    assert tensor.shape == (1, 3, *input_hw) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, expected)
    assert geometry.resized_size_hw == (new_h, new_w)
    assert (geometry.pad_top, geometry.pad_left) == (top, left)
    assert geometry.source_size_hw == size_hw


def test_a_reused_letterboxer_leaves_nothing_of_the_previous_image():
    letterboxer = Letterboxer((320, 320))
    wide, tall = random_image((100, 400), 1), random_image((400, 100), 2)

    letterboxer(wide)
    tensor, _ = letterboxer(tall)

    np.testing.assert_array_equal(
        tensor, straightforward_letterbox(tall, (320, 320))[0]
    )


def test_the_tensor_is_written_into_the_buffer_given():
    buffer = np.full((1, 3, 320, 320), -1, np.float32)
    image = random_image((200, 300))

    tensor, _ = Letterboxer((320, 320))(image, out=buffer)

    assert tensor is buffer
    np.testing.assert_array_equal(
        buffer, straightforward_letterbox(image, (320, 320))[0]
    )


def test_a_strided_view_is_letterboxed_like_its_copy():
    bgr = random_image((300, 500))
    view = bgr[::-1, :, ::-1]  # negative strides, as a channel flip gives

    tensor, _ = letterbox(view, (320, 320))

    np.testing.assert_array_equal(tensor, letterbox(view.copy(), (320, 320))[0])


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((10, 10), np.uint8), id="gray"),
        pytest.param(np.zeros((10, 10, 4), np.uint8), id="rgba"),
        pytest.param(np.zeros((10, 10, 3), np.float32), id="float"),
    ],
)
def test_anything_but_an_rgb_uint8_image_is_refused(image):
    with pytest.raises(ValueError, match="uint8 RGB"):
        letterbox(image, (320, 320))


@pytest.mark.parametrize("input_hw", INPUTS_HW)
@pytest.mark.parametrize("size_hw", SIZES_HW)
def test_the_letterbox_content_maps_back_onto_the_whole_image(size_hw, input_hw):
    geometry = letterbox_geometry(size_hw, input_hw)
    top, left = geometry.pad_top, geometry.pad_left
    height, width = geometry.resized_size_hw
    content = np.array([[left, top, left + width, top + height]], np.float32)

    mapped = geometry.boxes_to_source(content)

    np.testing.assert_allclose(mapped, [[0, 0, size_hw[1], size_hw[0]]], atol=1e-3)


def test_boxes_reaching_into_the_padding_are_clipped_to_the_image():
    geometry = letterbox_geometry((480, 640), (320, 320))
    whole_input = np.array([[-50, -50, 400, 400]], np.float32)

    mapped = geometry.boxes_to_source(whole_input)

    np.testing.assert_array_equal(mapped, [[0, 0, 640, 480]])
