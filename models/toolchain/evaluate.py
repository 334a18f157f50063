"""Evaluate the builds of one model on the same labelled split and report.

Every variant predicts on the same images at the evaluation confidence
(``defaults.EVAL_CONFIDENCE``) and is scored by :mod:`.coco`: box and mask
mAP50-95, mAP50, mAP75, and precision and recall at the deployment confidence
and IoU 0.5. The PyTorch variant needs torch and Ultralytics; the OpenVINO
variants need neither. Throughput of the FP32 and INT8 IRs comes from
``benchmark_app`` (see :mod:`.benchmark`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segbatch import defaults
from segbatch.models.toolchain.benchmark import Throughput, measure_throughput
from segbatch.models.toolchain.coco import GroundTruth, read_yolo_split, score
from segbatch.models.toolchain.export import ir_size_bytes
from segbatch.models.toolchain.predict import (
    load_ir,
    predict_openvino,
    predict_pytorch,
)

logger = logging.getLogger(__name__)

PYTORCH = "pytorch"
VARIANT_TITLES = {
    PYTORCH: "PyTorch",
    "fp32": "OpenVINO FP32",
    "fp16": "OpenVINO FP16",
    "int8": "OpenVINO INT8",
}

_VARIANT_ORDER = {label: index for index, label in enumerate(VARIANT_TITLES)}


@dataclass
class Evaluation:
    """The figures of every evaluated variant; fractions in [0, 1]."""

    data_dir: str
    split: str
    images: int
    instances: int
    input_size_hw: tuple[int, int]
    eval_confidence: float
    deployment_confidence: float
    figures: dict[str, dict[str, dict[str, float]]]  # variant -> family -> metric
    seconds: dict[str, float] = field(default_factory=dict)  # variant -> wall time
    ir_bytes: dict[str, int] = field(default_factory=dict)
    throughput: Throughput | None = None

    @property
    def reference(self) -> str:
        """The variant the others are compared with: PyTorch when evaluated."""
        return PYTORCH if PYTORCH in self.figures else next(iter(self.figures))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reference"] = self.reference
        if self.throughput is not None:
            data["throughput"]["int8_over_fp32"] = _ratio(self.throughput)
        return data


def _ratio(throughput: Throughput) -> float | None:
    if {"int8", "fp32"} <= set(throughput.fps):
        return throughput.ratio("int8", "fp32")
    return None


def evaluate(
    truth: GroundTruth,
    *,
    irs: Mapping[str, Path],
    weights: Path | None = None,
    imgsz: int | None = None,
    benchmark_irs: Mapping[str, Path] | None = None,
    benchmark_duration_s: int = defaults.BENCHMARK_DURATION_S,
    data_dir: Path | None = None,
    split: str = "val",
) -> Evaluation:
    """Score the PyTorch ``weights`` (when given) and each ``label -> model.xml``.

    Args:
        truth: the labelled images to predict on.
        irs: the OpenVINO variants to score, such as ``{"fp16": ..., "int8": ...}``.
        weights: the PyTorch checkpoint; scored first, as the reference.
        imgsz: the square input size of the PyTorch predictions (and of dynamic
            IRs); by default the static input size of the first IR.
        benchmark_irs: IRs to measure with ``benchmark_app``, such as
            ``{"fp32": ..., "int8": ...}``; none when omitted.
    """
    figures: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    input_size_hw = (imgsz, imgsz) if imgsz else None

    if input_size_hw is None:
        input_size_hw = _static_input_size_hw(next(iter(irs.values()), None))
    segmenters = {
        label: load_ir(xml_path, truth.class_names, input_size_hw, label=label)
        for label, xml_path in irs.items()
    }

    if weights is not None:
        started = time.perf_counter()
        predictions = predict_pytorch(weights, truth, imgsz=input_size_hw[0])
        figures[PYTORCH] = score(truth, predictions)
        seconds[PYTORCH] = time.perf_counter() - started
        logger.info("scored %s: %s", PYTORCH, figures[PYTORCH])

    for label, segmenter in segmenters.items():
        started = time.perf_counter()
        figures[label] = score(truth, predict_openvino(segmenter, truth))
        seconds[label] = time.perf_counter() - started
        logger.info("scored %s: %s", label, figures[label])

    throughput = None
    if benchmark_irs:
        throughput = measure_throughput(
            benchmark_irs, input_size_hw, duration_s=benchmark_duration_s
        )

    all_irs = {**(benchmark_irs or {}), **irs}
    ordered = sorted(
        all_irs, key=lambda label: _VARIANT_ORDER.get(label, len(_VARIANT_ORDER))
    )
    return Evaluation(
        data_dir=str(data_dir) if data_dir else "",
        split=split,
        images=len(truth.images),
        instances=len(truth.dataset["annotations"]),
        input_size_hw=input_size_hw,
        eval_confidence=defaults.EVAL_CONFIDENCE,
        deployment_confidence=defaults.CONFIDENCE_THRESHOLD,
        figures=figures,
        seconds=seconds,
        ir_bytes={label: ir_size_bytes(all_irs[label]) for label in ordered},
        throughput=throughput,
    )


def _static_input_size_hw(xml_path: Path | None) -> tuple[int, int]:
    """The ``(H, W)`` of an IR's static ``1x3xHxW`` input."""
    import openvino as ov

    if xml_path is None:
        raise ValueError("expected an input size: give imgsz or at least one IR")
    shape = ov.Core().read_model(str(xml_path)).input(0).get_partial_shape()
    if shape.is_dynamic:
        raise ValueError(f"{xml_path} has a dynamic input {shape}: give imgsz")
    return int(shape[2].get_length()), int(shape[3].get_length())


def evaluate_split(
    data_dir: Path,
    *,
    irs: Mapping[str, Path],
    weights: Path | None = None,
    split: str = "val",
    limit: int | None = None,
    imgsz: int | None = None,
    benchmark_irs: Mapping[str, Path] | None = None,
    benchmark_duration_s: int = defaults.BENCHMARK_DURATION_S,
) -> Evaluation:
    """:func:`evaluate` on the ``split`` of a YOLO dataset folder (first ``limit``)."""
    truth = read_yolo_split(data_dir, split, limit=limit)
    return evaluate(
        truth,
        irs=irs,
        weights=weights,
        imgsz=imgsz,
        benchmark_irs=benchmark_irs,
        benchmark_duration_s=benchmark_duration_s,
        data_dir=data_dir,
        split=split,
    )
