"""Scoring against YOLO labels, and evaluating the published model with a report."""

from __future__ import annotations

import json

import pytest

from segbatch.models.toolchain import coco
from segbatch.models.toolchain.coco import ScoredInstance

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def truth(generated_val_split) -> coco.GroundTruth:
    return coco.read_yolo_split(generated_val_split, "val")


@pytest.mark.parametrize("family", coco.FAMILIES)
def test_the_ground_truth_scored_as_predictions_is_perfect(truth, family):
    figures = coco.score(truth, coco.ground_truth_as_predictions(truth))

    assert figures[family] == dict.fromkeys(coco.METRICS, 1.0)


def test_the_ground_truth_has_one_annotation_per_label_line(truth, generated_val_split):
    lines = [
        line
        for path in (generated_val_split / "labels" / "val").glob("*.txt")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    sizes = {image.image_id: image.size_wh for image in truth.images}

    assert len(truth.dataset["annotations"]) == len(lines)
    for annotation in truth.dataset["annotations"]:
        assert annotation["segmentation"]["size"] == list(
            reversed(sizes[annotation["image_id"]])
        )
        assert annotation["area"] > 0


def test_missing_instances_lower_recall_and_leave_precision(truth):
    perfect = coco.ground_truth_as_predictions(truth)
    halved = {image_id: found[::2] for image_id, found in perfect.items()}
    kept = sum(len(found) for found in halved.values())
    total = sum(len(found) for found in perfect.values())

    figures = coco.score(truth, halved)

    for family in coco.FAMILIES:
        assert figures[family]["recall"] == pytest.approx(kept / total)
        assert figures[family]["precision"] == 1.0
        assert figures[family]["map50_95"] < 1.0


def test_a_lower_scored_duplicate_of_every_instance_is_a_false_positive(truth):
    perfect = coco.ground_truth_as_predictions(truth)
    doubled = {
        image_id: [
            *found,
            *(ScoredInstance(p.class_id, 0.5, p.box_xyxy, p.mask_rle) for p in found),
        ]
        for image_id, found in perfect.items()
    }

    figures = coco.score(truth, doubled)

    for family in coco.FAMILIES:
        assert figures[family]["precision"] == 0.5
        assert figures[family]["recall"] == 1.0
        assert figures[family]["map50_95"] == 1.0


def test_predictions_under_the_deployment_confidence_count_for_map_only(truth):
    perfect = coco.ground_truth_as_predictions(truth)
    unsure = {
        image_id: [
            ScoredInstance(p.class_id, 0.1, p.box_xyxy, p.mask_rle) for p in found
        ]
        for image_id, found in perfect.items()
    }

    figures = coco.score(truth, unsure, confidence=0.25)

    assert figures["mask"]["map50_95"] == 1.0
    assert figures["mask"]["precision"] == 0.0
    assert figures["mask"]["recall"] == 0.0


@pytest.fixture(scope="module")
def evaluation(published_model, truth):
    from segbatch.models.toolchain.evaluate import evaluate

    return evaluate(
        truth,
        irs={
            "fp16": published_model.ir_path("fp16"),
            "int8": published_model.ir_path("int8"),
        },
    )


def test_the_published_int8_model_scores_between_zero_and_one(evaluation, truth):
    assert evaluation.images == len(truth.images)
    assert evaluation.reference == "fp16"
    for variant in ("fp16", "int8"):
        for family in coco.FAMILIES:
            values = evaluation.figures[variant][family]
            assert set(values) == set(coco.METRICS)
            assert all(0.0 <= value <= 1.0 for value in values.values())


def test_the_report_has_a_table_per_family_and_a_chart(evaluation, tmp_path):
    from segbatch.models.toolchain.report import METRIC_TITLES, write_report

    files = write_report(evaluation, tmp_path, title="shapes on 8 images")

    text = files.markdown.read_text()
    header = "| metric | OpenVINO FP16 | OpenVINO INT8 | Δ |"
    assert text.count(header) == len(coco.FAMILIES)
    assert "## Boxes" in text and "## Masks" in text
    for metric, title in METRIC_TITLES.items():
        fp16 = evaluation.figures["fp16"]["mask"][metric] * 100
        int8 = evaluation.figures["int8"]["mask"][metric] * 100
        row = f"| {title} | {fp16:.1f} | {int8:.1f} | {int8 - fp16:+.1f} |"
        assert row in text
    assert files.chart.read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads(files.figures.read_text())["figures"] == evaluation.figures


def test_benchmark_app_measures_the_int8_model(published_model):
    from segbatch.models.toolchain.benchmark import measure_throughput

    throughput = measure_throughput(
        {"int8": published_model.ir_path("int8")},
        published_model.input_size_hw,
        duration_s=1,
    )

    assert throughput.fps["int8"] > 0


def test_the_model_page_lists_the_published_version(published_model):
    from segbatch.models.toolchain.model_page import render_model_page

    page = render_model_page([published_model.metadata])

    assert f"[{published_model.ref}]" in page
    assert f"## {published_model.ref}" in page
    assert page.count("| metric |") == len(coco.FAMILIES)


def test_the_model_page_gives_the_commands_that_reproduce_a_version(published_model):
    from segbatch.models.toolchain.model_page import render_model_page

    page = render_model_page([published_model.metadata])

    dataset = published_model.metadata["dataset"]
    folder = f"models/{published_model.ref}"
    assert (
        f"--train {dataset['train']} --val {dataset['val']} --seed {dataset['seed']}"
        in page
    )
    for artifact in ("model.pt", "fp16/model.xml", "int8/model.xml", "model.onnx"):
        assert f"{folder}/{artifact}" in page
        assert (published_model.path / artifact).is_file()
