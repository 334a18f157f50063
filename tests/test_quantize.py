"""INT8 builds: what stays in floating point, their size, their calibration input."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from segbatch import defaults
from segbatch.models.toolchain.quantize import (
    calibration_uris,
    float_head_op_names,
    letterboxed_input,
)
from segbatch.uris import file_uri
from segbatch.workers.letterbox import letterbox


def _read(model, precision: str):
    return ov.Core().read_model(str(model.ir_path(precision)))


def test_the_float_tail_of_the_head_is_its_decoding_and_output_assembly(
    published_model,
):
    graph = _read(published_model, "fp16")
    types = {op.get_friendly_name(): op.get_type_name() for op in graph.get_ops()}

    names = float_head_op_names(graph)

    kinds = {types[name] for name in names}
    assert {"Softmax", "Sigmoid", "Concat"} <= kinds  # DFL, class scores, output
    assert any(name.split("/")[-2] == "dfl" for name in names)
    assert not any("/cv2." in n or "/cv3." in n or "/proto/" in n for n in names)
    prediction = next(o for o in graph.outputs if o.get_partial_shape().rank == 3)
    assert prediction.get_node().input_value(0).get_node().get_friendly_name() in names


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_the_float_tail_is_the_same_in_every_build(published_model, precision):
    assert float_head_op_names(_read(published_model, precision)) == (
        float_head_op_names(_read(published_model, "fp16"))
    )


def test_the_published_int8_ir_is_quantized_except_the_head_tail(published_model):
    graph = _read(published_model, "int8")
    tail = set(float_head_op_names(graph))

    quantized_inputs = {
        op.get_friendly_name()
        for op in graph.get_ops()
        if any(
            v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values()
        )
    }

    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())
    assert any("Conv" in name for name in quantized_inputs)
    assert not tail & quantized_inputs


def test_the_published_int8_ir_fits_the_size_limit(published_model):
    xml = published_model.ir_path("int8")

    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size

    assert size <= defaults.MAX_INT8_IR_BYTES


def test_calibration_reads_a_folder_in_order_and_stops_at_the_count(
    generated_val_split,
):
    folder = generated_val_split / "images" / "val"
    expected = [file_uri(p.resolve()) for p in sorted(folder.glob("*.jpg"))[:3]]

    assert calibration_uris(str(folder), 3) == expected


def test_a_calibration_input_from_s3_is_the_letterboxed_image(
    generated_val_split, s3_client, s3_bucket
):
    from segbatch.models.toolchain.predict import load_rgb

    paths = sorted((generated_val_split / "images" / "val").glob("*.jpg"))[:2]
    for path in paths:
        s3_client.put_object(
            Bucket=s3_bucket, Key=f"calib/{path.name}", Body=path.read_bytes()
        )

    uris = calibration_uris(f"s3://{s3_bucket}/calib/", 5)
    tensor_nchw = letterboxed_input(uris[0], (320, 320))

    assert uris == [f"s3://{s3_bucket}/calib/{path.name}" for path in paths]
    expected, _ = letterbox(load_rgb(paths[0]), (320, 320))
    np.testing.assert_array_equal(tensor_nchw, expected)
