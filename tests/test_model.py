"""Loading a model version safely, and segmenting batches of images with it."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segbatch.errors import ChecksumMismatch, InferenceError, ModelError
from segbatch.workers.letterbox import letterbox_geometry
from segbatch.workers.model import SegmentationModel
from tests.support.fake_yolo import anchor, write_fake_model

# A stuck inference queue must fail the test, not hang the suite.
pytestmark = pytest.mark.timeout(300)

CLASS_NAMES = ("ellipse", "star", "ring", "cross")


def planted(num_classes: int, input_hw: tuple[int, int]):
    """A prediction with one detection of the last class over a known input box,
    a weaker duplicate that NMS removes, and one under the confidence threshold;
    prototypes that are foreground wherever the first coefficient is positive."""
    height, width = input_hw
    box_xywh = (width / 2, height / 2, width / 4, height / 8)
    scores = [0.0] * num_classes
    duplicate_scores = list(scores)
    scores[-1], duplicate_scores[-1] = 0.9, 0.8
    columns = [
        anchor(box_xywh, scores, [1.0, 0.0]),
        anchor(box_xywh, duplicate_scores, [1.0, 0.0]),
        anchor((10, 10, 8, 8), [0.1] * num_classes, [1.0, 0.0]),
    ]
    protos = np.stack(
        [np.ones((height // 4, width // 4)), -np.ones((height // 4, width // 4))]
    )
    x, y, w, h = box_xywh
    box_xyxy = np.array([[x - w / 2, y - h / 2, x + w / 2, y + h / 2]], np.float32)
    return np.stack(columns, axis=1), protos.astype(np.float32), box_xyxy


def fake_model(
    tmp_path: Path, *, class_names=CLASS_NAMES, input_shape=(1, 3, 320, 320)
):
    input_hw = (320, 320) if input_shape[2] < 0 else tuple(input_shape[2:])
    prediction, protos, _ = planted(len(class_names), input_hw)
    return write_fake_model(
        tmp_path, prediction, protos, class_names=class_names, input_shape=input_shape
    )


def gray_image(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 127, np.uint8)


# --- Loading --------------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("relative", "damage"),
    [
        pytest.param("int8/model.bin", flip_a_byte, id="bin-byte-flipped"),
        pytest.param("int8/model.bin", truncate, id="bin-truncated"),
        pytest.param("int8/model.xml", flip_a_byte, id="xml-byte-flipped"),
    ],
)
def test_a_tampered_ir_is_refused_naming_the_file(tmp_path, relative, damage):
    model = fake_model(tmp_path)
    damage(model.path / relative)

    with pytest.raises(ChecksumMismatch) as raised:
        SegmentationModel.load(model)

    assert str(model.path / relative) in str(raised.value)


def test_an_ir_that_openvino_cannot_read_is_a_model_error(tmp_path):
    model = fake_model(tmp_path)
    truncate(model.path / "int8" / "model.bin")

    with pytest.raises(ModelError, match="cannot read the OpenVINO IR") as raised:
        SegmentationModel.load(model, verify=False)

    assert isinstance(raised.value.__cause__, RuntimeError)


def test_loading_logs_the_model_its_checksum_and_its_requests(tmp_path, caplog):
    model = fake_model(tmp_path)
    caplog.set_level(logging.INFO, logger="segbatch.workers.model")

    loaded = SegmentationModel.load(model)

    message = caplog.records[-1].getMessage()
    assert model.ref in message
    assert model.sha256("int8/model.bin")[:12] in message
    assert f"{loaded.num_requests} infer requests" in message
    assert loaded.num_requests >= 1


def test_float_layers_are_computed_in_32_bits_whatever_the_cpu_prefers(tmp_path):
    import openvino as ov

    core = ov.Core()
    # Ask for bf16, OpenVINO's default where the CPU has it; a CPU without bf16
    # arithmetic refuses, and its default is f32 already.
    with contextlib.suppress(RuntimeError):
        core.set_property("CPU", {"INFERENCE_PRECISION_HINT": "bf16"})

    loaded = SegmentationModel.load(fake_model(tmp_path), core=core)

    assert loaded.float_precision == "f32"


@pytest.mark.parametrize(
    ("input_shape", "class_names", "expected_hw"),
    [
        pytest.param((1, 3, 320, 320), CLASS_NAMES, (320, 320), id="static-320"),
        pytest.param((1, 3, 256, 384), ("one",), (256, 384), id="static-256x384-1cls"),
        pytest.param((1, 3, 640, 640), tuple(map(str, range(80))), (640, 640), id="80"),
        pytest.param((-1, 3, -1, -1), CLASS_NAMES, (320, 320), id="dynamic"),
        pytest.param((-1, 3, 320, 320), CLASS_NAMES, (320, 320), id="dynamic-batch"),
        pytest.param((4, 3, 320, 320), CLASS_NAMES, (320, 320), id="batch-4"),
    ],
)
def test_any_input_size_and_class_count_of_an_export_is_accepted(
    tmp_path, input_shape, class_names, expected_hw
):
    model = fake_model(tmp_path, class_names=class_names, input_shape=input_shape)

    loaded = SegmentationModel.load(model)
    [detections] = loaded.segment([gray_image(480, 640)])

    assert loaded.input_size_hw == expected_hw
    assert [d.class_name for d in detections] == [class_names[-1]]
    assert detections[0].score == pytest.approx(0.9)


def test_outputs_that_do_not_fit_the_class_names_are_refused(tmp_path):
    prediction, protos, _ = planted(len(CLASS_NAMES), (320, 320))
    model = write_fake_model(
        tmp_path, prediction, protos, class_names=(*CLASS_NAMES, "extra")
    )

    with pytest.raises(ModelError, match="expected a prediction of 4 \\+ 5 classes"):
        SegmentationModel.load(model)


# --- Segmenting -----------------------------------------------------------------------


def test_each_image_gets_its_own_detections_in_input_order(tmp_path):
    loaded = SegmentationModel.load(fake_model(tmp_path))
    sizes_hw = [(480, 640), (640, 480), (100, 100), (37, 1500), (2000, 900)] * 2
    _, _, box_input_xyxy = planted(len(CLASS_NAMES), (320, 320))

    results = loaded.segment([gray_image(*size_hw) for size_hw in sizes_hw])

    assert len(results) == len(sizes_hw) > loaded.num_requests
    for size_hw, detections in zip(sizes_hw, results, strict=True):
        geometry = letterbox_geometry(size_hw, (320, 320))
        [expected_box] = geometry.boxes_to_source(box_input_xyxy).tolist()
        [detection] = detections
        assert detection.box_xyxy == pytest.approx(expected_box)
        x1, y1, x2, y2 = expected_box
        # The mask fills the box up to a pixel along its border.
        border_px = 2 * ((x2 - x1) + (y2 - y1))
        assert abs(detection.mask_area_px - (x2 - x1) * (y2 - y1)) <= border_px
        assert detection.polygon_holes == [False]


def test_the_thresholds_given_are_applied(tmp_path):
    loaded = SegmentationModel.load(fake_model(tmp_path))
    images = [gray_image(320, 320)]

    strict = loaded.segment(images, confidence=0.95)
    loose = loaded.segment(images, confidence=0.05, iou=1.0)

    assert strict == [[]]
    assert sorted(d.score for d in loose[0]) == pytest.approx([0.1, 0.8, 0.9])


def test_a_failed_batch_leaves_nothing_behind_for_the_next(tmp_path):
    loaded = SegmentationModel.load(fake_model(tmp_path))
    good = [gray_image(300, 400), gray_image(500, 200)]
    not_rgb = np.zeros((50, 50), np.uint8)

    with pytest.raises(ValueError, match="uint8 RGB"):
        loaded.segment([*good, not_rgb, *good])
    results = loaded.segment(good)

    assert [len(detections) for detections in results] == [1, 1]
    assert results[0][0].box_xyxy != results[1][0].box_xyxy


def test_an_empty_batch_gives_no_results(tmp_path):
    assert SegmentationModel.load(fake_model(tmp_path)).segment([]) == []


def test_an_openvino_failure_while_inferring_is_an_inference_error(tmp_path):
    loaded = SegmentationModel.load(fake_model(tmp_path))
    wrong_shape = np.zeros((1, 3, 10, 10), np.float32)
    geometry = letterbox_geometry((10, 10), (320, 320))

    with pytest.raises(InferenceError, match="could not start inference") as raised:
        loaded._start(wrong_shape, (0, geometry))

    assert isinstance(raised.value.__cause__, RuntimeError)


def test_importing_the_runtime_loads_no_torch_and_starts_no_openvino():
    code = (
        "import sys\n"
        "import openvino\n"
        "class NoCore:\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        raise AssertionError('an OpenVINO Core was made at import')\n"
        "openvino.Core = NoCore\n"
        "import segbatch.workers.model, segbatch.workers.postprocess\n"
        "import segbatch.workers.polygons, segbatch.workers.letterbox\n"
        "print(sorted({'torch', 'ultralytics'} & set(sys.modules)))\n"
    )

    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert found.stdout.strip() == "[]"
