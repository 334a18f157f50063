"""The evaluation report: ``report.md``, a bar chart and the figures as JSON.

The Markdown report has one table per metric family (box, mask): a row per metric,
a column per variant, and beside each non-reference variant its difference to the
reference (PyTorch when it was evaluated) in percentage points. Throughput and IR
sizes follow when they were measured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from segbatch.models.toolchain.coco import FAMILIES, MATCH_IOU, METRICS
from segbatch.models.toolchain.evaluate import VARIANT_TITLES, Evaluation

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
CHART_FILE = "report.png"
FIGURES_FILE = "evaluation.json"

FAMILY_TITLES = {"box": "Boxes", "mask": "Masks"}
METRIC_TITLES = {
    "map50_95": "mAP50-95",
    "map50": "mAP50",
    "map75": "mAP75",
    "precision": "precision",
    "recall": "recall",
}
CHART_METRICS = ("map50_95", "map50")
CHART_SIZE_IN = (9.0, 4.5)
CHART_DPI = 110


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    chart: Path
    figures: Path


def write_report(evaluation: Evaluation, out_dir: Path, *, title: str) -> ReportFiles:
    """Write the report, its chart and its figures into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / REPORT_FILE
    markdown.write_text(render_markdown(evaluation, title=title))

    chart = out_dir / CHART_FILE
    draw_chart(evaluation, chart)

    figures = out_dir / FIGURES_FILE
    figures.write_text(json.dumps(evaluation.as_dict(), indent=2) + "\n")
    logger.info("wrote %s, %s and %s", markdown, chart, figures)
    return ReportFiles(markdown, chart, figures)


def variant_title(variant: str) -> str:
    return VARIANT_TITLES.get(variant, variant)


def _points(value: float) -> str:
    return f"{value * 100:.1f}"


def _difference(value: float, reference: float) -> str:
    return f"{(value - reference) * 100:+.1f}"


def render_markdown(evaluation: Evaluation, *, title: str) -> str:
    """The report as Markdown text."""
    reference = evaluation.reference
    height, width = evaluation.input_size_hw

    lines = [
        f"# {title}",
        "",
        f"Evaluated on {evaluation.images} images ({evaluation.instances} instances) "
        f"of the `{evaluation.split}` split of `{evaluation.data_dir}`, "
        f"input {height}x{width}.",
        "",
        "Figures are percentages. mAP is COCO average precision (all areas, up to "
        "100 detections per image) over IoU 0.50:0.95, at 0.50 and at 0.75, from "
        f"predictions at confidence {evaluation.eval_confidence}. Precision and "
        f"recall count the predictions at the deployment confidence "
        f"{evaluation.deployment_confidence} that match a ground truth instance of "
        f"their class at IoU {MATCH_IOU} or more, best score first. "
        f"Δ is the difference to {variant_title(reference)} in percentage points.",
        "",
        "PyTorch runs through Ultralytics' `predict` (its own letterbox, "
        "`retina_masks=True`); the OpenVINO builds run through the workers' "
        "`SegmentationModel` (square letterbox). Both compute each mask from its "
        "prototype logits at the image's own resolution, and are scored on masks "
        "before they become polygons.",
        "",
    ]

    for family in FAMILIES:
        lines += [f"## {FAMILY_TITLES[family]}", ""]
        lines += metrics_table(evaluation.figures, family, reference)
        lines.append("")

    lines += _throughput_lines(evaluation)
    lines += _size_lines(evaluation)
    lines += [f"![{CHART_FILE}]({CHART_FILE})", ""]
    return "\n".join(lines)


def metrics_table(
    figures: Mapping[str, Mapping[str, Mapping[str, float]]],
    family: str,
    reference: str,
) -> list[str]:
    """A Markdown table of one family: a row per metric, a column per variant, and
    the difference of each other variant to ``reference`` in points."""
    others = [variant for variant in figures if variant != reference]
    header = ["metric", variant_title(reference)]
    for variant in others:
        header += [variant_title(variant), "Δ"]

    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for metric in METRICS:
        base = figures[reference][family][metric]
        cells = [METRIC_TITLES[metric], _points(base)]
        for variant in others:
            value = figures[variant][family][metric]
            cells += [_points(value), _difference(value, base)]
        lines.append(_row(cells))
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _throughput_lines(evaluation: Evaluation) -> list[str]:
    throughput = evaluation.throughput
    if throughput is None:
        return []
    height, width = evaluation.input_size_hw
    lines = [
        "## Throughput",
        "",
        f"OpenVINO `benchmark_app`, throughput hint, {throughput.duration_s} s per "
        f"model, input [1,3,{height},{width}], on {throughput.device} "
        f"({throughput.cpu}, {throughput.cpu_count} logical cores).",
        "",
        _row(["model", "frames per second"]),
        _row(["---", "---:"]),
    ]
    lines += [
        _row([variant_title(label), f"{fps:.1f}"])
        for label, fps in throughput.fps.items()
    ]
    if {"int8", "fp32"} <= set(throughput.fps):
        lines += ["", f"INT8 / FP32: **{throughput.ratio('int8', 'fp32'):.2f}x**"]
    return [*lines, ""]


def _size_lines(evaluation: Evaluation) -> list[str]:
    if not evaluation.ir_bytes:
        return []
    lines = [
        "## Size",
        "",
        _row(["model", "IR size (xml + bin), MB"]),
        _row(["---", "---:"]),
    ]
    lines += [
        _row([variant_title(label), f"{size / 1e6:.2f}"])
        for label, size in evaluation.ir_bytes.items()
    ]
    return [*lines, ""]


def draw_chart(evaluation: Evaluation, path: Path) -> None:
    """Grouped bars: box and mask mAP50-95 and mAP50 of each variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(family, metric) for family in FAMILIES for metric in CHART_METRICS]
    variants = list(evaluation.figures)
    bar_width = 0.8 / len(variants)

    figure, axes = plt.subplots(figsize=CHART_SIZE_IN)
    for offset, variant in enumerate(variants):
        heights = [evaluation.figures[variant][f][m] * 100 for f, m in groups]
        positions = [
            i + (offset - (len(variants) - 1) / 2) * bar_width
            for i in range(len(groups))
        ]
        bars = axes.bar(positions, heights, bar_width, label=variant_title(variant))
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)

    axes.set_xticks(
        range(len(groups)),
        [f"{FAMILY_TITLES[f]} {METRIC_TITLES[m]}" for f, m in groups],
    )
    axes.set_ylabel("%")
    axes.set_ylim(0, 105)
    axes.set_title(f"{evaluation.images} images, {evaluation.split} split")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=CHART_DPI)
    plt.close(figure)
