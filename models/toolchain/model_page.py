"""``models/README.md``: every published model version and its figures.

The page is generated from the ``metadata.json`` of every version under the models
folder, so it never disagrees with them; it is rewritten whenever a version is
published.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from segbatch.models import registry
from segbatch.models.toolchain.coco import FAMILIES
from segbatch.models.toolchain.report import FAMILY_TITLES, metrics_table

logger = logging.getLogger(__name__)

PAGE_FILE = "README.md"


def write_model_page(models_dir: Path) -> Path:
    """Rewrite ``models_dir/README.md`` from every version's metadata."""
    versions = [
        json.loads((models_dir / ref / registry.METADATA_FILE).read_text())
        for ref in registry.available(models_dir)
    ]
    path = models_dir / PAGE_FILE
    path.write_text(render_model_page(versions))
    logger.info("wrote %s (%d versions)", path, len(versions))
    return path


def render_model_page(versions: list[dict[str, Any]]) -> str:
    """The page for the given metadata dictionaries."""
    lines = [
        "# Models",
        "",
        "Every published model version, generated from its `metadata.json` by "
        "`segbatch model publish`. A version folder never changes once published: "
        "workers check each artifact against the sha256 recorded there. Figures are "
        "percentages on the version's validation split; see each version's "
        "`report.md` for how they are measured.",
        "",
    ]
    if not versions:
        return "\n".join([*lines, "No version is published yet.", ""])

    lines += [
        "| version | created | dataset | input | mask mAP50-95 (PyTorch / INT8) "
        "| box mAP50-95 (PyTorch / INT8) | INT8 vs FP32 speed | INT8 size, MB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [_summary_row(meta) for meta in versions]
    lines.append("")
    for meta in versions:
        lines += _version_section(meta)
    return "\n".join(lines)


def _ref(meta: dict[str, Any]) -> str:
    return f"{meta['name']}/{meta['version']}"


def _summary_row(meta: dict[str, Any]) -> str:
    evaluation = meta.get("evaluation", {})
    figures = evaluation.get("figures", {})
    reference = evaluation.get("reference", "pytorch")
    dataset = meta.get("dataset", {})
    height, width = meta["input_size_hw"]

    def pair(family: str) -> str:
        values = [
            figures.get(v, {}).get(family, {}).get("map50_95")
            for v in (reference, "int8")
        ]
        return " / ".join("-" if v is None else f"{v * 100:.1f}" for v in values)

    ratio = (evaluation.get("throughput") or {}).get("int8_over_fp32")
    size = evaluation.get("ir_bytes", {}).get("int8")
    cells = [
        f"[{_ref(meta)}]({meta['name']}/{meta['version']}/report.md)",
        str(meta.get("created_at", "-"))[:10],
        f"{dataset.get('version', '-')} (seed {dataset.get('seed', '-')})",
        f"{height}x{width}",
        pair("mask"),
        pair("box"),
        "-" if ratio is None else f"{ratio:.2f}x",
        "-" if size is None else f"{size / 1e6:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _version_section(meta: dict[str, Any]) -> list[str]:
    evaluation = meta.get("evaluation", {})
    recipe = meta.get("recipe", {}).get("train", {})
    classes = ", ".join(meta["class_names"])
    lines = [
        f"## {_ref(meta)}",
        "",
        f"{meta.get('architecture', '?')} ({meta.get('task', '?')}), classes: "
        f"{classes}. Default build: {meta.get('precision', '?')}. Trained "
        f"{recipe.get('epochs_completed', '?')} of {recipe.get('epochs', '?')} "
        f"planned epochs at {recipe.get('imgsz', '?')} px "
        f"({recipe.get('checkpoint', 'checkpoint unknown')}), starting from "
        f"{recipe.get('initial_weights') or 'random weights'}; "
        f"evaluated on {evaluation.get('images', '?')} images "
        f"({evaluation.get('instances', '?')} instances).",
        "",
    ]
    figures = evaluation.get("figures")
    if not figures:
        return [*lines, "No evaluation recorded.", ""]
    reference = evaluation.get("reference", next(iter(figures)))
    for family in FAMILIES:
        lines += [f"{FAMILY_TITLES[family]}:", ""]
        lines += metrics_table(figures, family, reference)
        lines.append("")
    return [*lines, *_reproduce_lines(meta)]


def _reproduce_lines(meta: dict[str, Any]) -> list[str]:
    """The commands that regenerate the version's dataset and score its builds."""
    dataset = meta.get("dataset", {})
    evaluation = meta.get("evaluation", {})
    if not {"seed", "train", "val"} <= dataset.keys():
        return []
    folder = f"models/{_ref(meta)}"
    data_dir = f"/tmp/{dataset.get('version') or 'dataset'}"
    height, _ = meta["input_size_hw"]
    limit = evaluation.get("images")
    limit_option = (
        f" --limit {limit}" if limit is not None and limit != dataset["val"] else ""
    )
    return [
        "To reproduce its figures (the toolchain extra, `pip install -e '.[train]'`; "
        "the FP32 IR for the throughput comparison is converted from the ONNX "
        "export):",
        "",
        "```bash",
        f"segbatch model dataset {data_dir} --train {dataset['train']} "
        f"--val {dataset['val']} --seed {dataset['seed']}",
        f"ovc {folder}/model.onnx --output_model /tmp/fp32/model.xml "
        "--compress_to_fp16 False",
        f"segbatch model evaluate --data {data_dir} --out-dir /tmp/report "
        f"--imgsz {height}{limit_option} --weights {folder}/model.pt "
        f"--fp16 {folder}/fp16/model.xml --int8 {folder}/int8/model.xml "
        "--fp32 /tmp/fp32/model.xml",
        "```",
        "",
    ]
