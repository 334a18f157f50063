"""The segmentation model: an OpenVINO IR compiled for the CPU, one image a request.

``SegmentationModel.load`` checks the IR against the sha256 recorded in the model
metadata before anything else reads it, then compiles it with the THROUGHPUT hint.
``segment`` letterboxes each image and queues it on an ``AsyncInferQueue`` holding as
many requests as OpenVINO finds optimal; while requests run, the main thread decodes
the outputs of those that finished, so postprocessing overlaps inference.

OpenVINO is not fork-safe: create the model in the process that uses it, after any
fork. Nothing here touches OpenVINO at import time.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import openvino as ov
import openvino.properties as ov_props
import openvino.properties.hint as ov_hints

from segbatch import defaults
from segbatch.errors import InferenceError, ModelError
from segbatch.models import registry
from segbatch.models.registry import ModelVersion
from segbatch.workers.letterbox import Letterboxer, LetterboxGeometry
from segbatch.workers.polygons import mask_to_polygons
from segbatch.workers.postprocess import Segmentation, postprocess
from segbatch.workers.results import Detection

logger = logging.getLogger(__name__)

DEVICE = "CPU"
# Layers left in floating point (the box-decoding head of an INT8 build, all of an
# FP16 one) are computed in 32 bits. OpenVINO's default on CPUs with bf16 arithmetic
# is bf16, whose 8-bit mantissa moves box corners by a pixel or more at 320 px and
# makes results depend on the machine a worker lands on.
INFERENCE_PRECISION = "f32"
CHECKSUM_PREFIX_CHARS = 12

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class _Finished:
    """One request's outputs ``(prediction_ca, protos_chw)``, copied out before the
    request is reused, or what went wrong in reading them."""

    index: int
    geometry: LetterboxGeometry
    outputs: tuple[np.ndarray, np.ndarray] | None
    error: BaseException | None = None


class SegmentationModel:
    """One compiled model version; not thread-safe (one caller at a time)."""

    def __init__(
        self,
        version: ModelVersion,
        compiled: ov.CompiledModel,
        *,
        precision: str,
        input_size_hw: tuple[int, int],
        output_indices: tuple[int, int],
    ) -> None:
        self.version = version
        self.precision = precision
        self.input_size_hw = input_size_hw
        self.class_names = version.class_names
        self._compiled = compiled
        self._prediction_index, self._protos_index = output_indices
        self.num_requests = int(
            compiled.get_property(ov_props.optimal_number_of_infer_requests())
        )
        self._letterboxer = Letterboxer(input_size_hw)
        self._finished: queue.SimpleQueue[_Finished] = queue.SimpleQueue()
        self._queue = ov.AsyncInferQueue(compiled, self.num_requests)
        self._queue.set_callback(self._on_request_done)

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def float_precision(self) -> str:
        """What OpenVINO computes the layers left in floating point in: ``f32``."""
        hint = self._compiled.get_property(ov_hints.inference_precision)
        return str(hint.get_type_name())

    @classmethod
    def load(
        cls,
        model: ModelVersion,
        *,
        precision: str = "int8",
        verify: bool = True,
        core: ov.Core | None = None,
    ) -> SegmentationModel:
        """Verify, read and compile the ``precision`` IR of ``model`` for the CPU.

        Raises:
            ChecksumMismatch: the IR differs from its recorded sha256.
            ModelError: the IR cannot be read or compiled, or its inputs and outputs
                are not those of a YOLO segmentation export for its class names.
        """
        xml_path = model.ir_path(precision)
        xml_file, bin_file = registry.ir_files(model, precision)
        if verify:
            registry.verify(model, [xml_file, bin_file])
        checksum = model.metadata.get("sha256", {}).get(bin_file, "unrecorded")

        core = core if core is not None else ov.Core()
        try:
            ov_model = core.read_model(str(xml_path))
        except RuntimeError as exc:
            raise ModelError(
                f"model {model.ref}: cannot read the OpenVINO IR {xml_path}: {exc}"
            ) from exc
        input_size_hw = _fix_input_shape(ov_model, model)
        output_indices = _find_outputs(ov_model, model)

        started = time.perf_counter()
        config = {
            ov_hints.performance_mode: ov_hints.PerformanceMode.THROUGHPUT,
            ov_hints.inference_precision: INFERENCE_PRECISION,
        }
        try:
            compiled = core.compile_model(ov_model, DEVICE, config)
        except RuntimeError as exc:
            raise ModelError(
                f"model {model.ref}: cannot compile {xml_path} for {DEVICE}: {exc}"
            ) from exc
        compile_s = time.perf_counter() - started

        loaded = cls(
            model,
            compiled,
            precision=precision,
            input_size_hw=input_size_hw,
            output_indices=output_indices,
        )
        logger.info(
            "model %s (%s, sha256 %s) compiled for %s in %.2f s: input %dx%d, "
            "%s streams, %d infer requests",
            model.ref,
            precision,
            checksum[:CHECKSUM_PREFIX_CHARS],
            DEVICE,
            compile_s,
            input_size_hw[1],
            input_size_hw[0],
            compiled.get_property(ov_props.num_streams()),
            loaded.num_requests,
        )
        return loaded

    def segment(
        self,
        images_rgb: Iterable[np.ndarray],
        *,
        confidence: float = defaults.CONFIDENCE_THRESHOLD,
        iou: float = defaults.IOU_THRESHOLD,
        max_det: int = defaults.MAX_DETECTIONS,
        class_agnostic: bool = False,
    ) -> list[list[Detection]]:
        """Detections with polygons for each ``(H, W, 3)`` uint8 RGB image.

        NMS runs within each class unless ``class_agnostic``. ``images_rgb`` may
        be a generator: each image is letterboxed and released as soon as it is
        taken, so a caller that decodes lazily never holds more than a few
        full-size images.

        Raises:
            InferenceError: OpenVINO failed while running the model.
        """
        return self._run(
            images_rgb,
            partial(detections_from, class_names=self.class_names),
            confidence=confidence,
            iou=iou,
            max_det=max_det,
            class_agnostic=class_agnostic,
        )

    def segment_masks(
        self,
        images_rgb: Iterable[np.ndarray],
        *,
        confidence: float = defaults.CONFIDENCE_THRESHOLD,
        iou: float = defaults.IOU_THRESHOLD,
        max_det: int = defaults.MAX_DETECTIONS,
        class_agnostic: bool = False,
    ) -> list[Segmentation]:
        """Boxes, scores, classes and binary masks for each image, in its pixels.

        Raises:
            InferenceError: OpenVINO failed while running the model.
        """
        return self._run(
            images_rgb,
            _unchanged,
            confidence=confidence,
            iou=iou,
            max_det=max_det,
            class_agnostic=class_agnostic,
        )

    def _run(
        self,
        images_rgb: Iterable[np.ndarray],
        finish: Callable[[Segmentation], _Result],
        *,
        confidence: float,
        iou: float,
        max_det: int,
        class_agnostic: bool,
    ) -> list[_Result]:
        """Infer every image; decode each finished one, then ``finish`` it, while
        the others are still running."""
        started = time.perf_counter()
        results: dict[int, _Result] = {}

        def collect(finished: _Finished) -> None:
            if finished.outputs is None:
                raise InferenceError(
                    f"model {self.ref} gave no readable output for image "
                    f"{finished.index} of the batch: {finished.error}"
                ) from finished.error
            prediction_ca, protos_chw = finished.outputs
            segmentation = postprocess(
                prediction_ca,
                protos_chw,
                finished.geometry,
                num_classes=len(self.class_names),
                confidence=confidence,
                iou=iou,
                max_det=max_det,
                class_agnostic=class_agnostic,
            )
            results[finished.index] = finish(segmentation)

        count = 0
        try:
            for index, image_rgb in enumerate(images_rgb):
                count = index + 1
                tensor, geometry = self._letterboxer(image_rgb)
                self._start(tensor, (index, geometry))
                while not self._finished.empty():
                    collect(self._finished.get())
            self._wait_all()
            while not self._finished.empty():
                collect(self._finished.get())
        except BaseException:
            self._abandon()
            raise

        missing = [index for index in range(count) if index not in results]
        if missing:
            raise InferenceError(
                f"model {self.ref} returned no output for images {missing} of the batch"
            )
        logger.debug(
            "segmented %d images in %.1f ms",
            len(results),
            1e3 * (time.perf_counter() - started),
        )
        return [results[index] for index in range(count)]

    def _start(
        self, tensor: np.ndarray, userdata: tuple[int, LetterboxGeometry]
    ) -> None:
        """Queue one input; it is copied, so the letterbox buffer is free again."""
        try:
            self._queue.start_async({0: tensor}, userdata)
        except RuntimeError as exc:
            raise InferenceError(
                f"model {self.ref} could not start inference: {exc}"
            ) from exc

    def _abandon(self) -> None:
        """After a failure: let running requests end and forget their outputs, so
        that the next batch starts clean."""
        try:
            self._queue.wait_all()
        except RuntimeError:
            logger.debug("an abandoned batch of %s failed too", self.ref, exc_info=True)
        while not self._finished.empty():
            self._finished.get()

    def _wait_all(self) -> None:
        try:
            self._queue.wait_all()
        except RuntimeError as exc:
            raise InferenceError(
                f"model {self.ref} failed in inference: {exc}"
            ) from exc

    def _on_request_done(
        self, request: ov.InferRequest, userdata: tuple[int, LetterboxGeometry]
    ) -> None:
        """Runs on an OpenVINO thread: copy the outputs out and hand them over."""
        index, geometry = userdata
        try:
            prediction = request.get_output_tensor(self._prediction_index).data
            protos = request.get_output_tensor(self._protos_index).data
            outputs = (prediction[0].copy(), protos[0].copy())
            self._finished.put(_Finished(index, geometry, outputs))
        except BaseException as exc:  # anything raised here would be lost
            self._finished.put(_Finished(index, geometry, None, exc))


def _unchanged(segmentation: Segmentation) -> Segmentation:
    return segmentation


def detections_from(
    segmentation: Segmentation, class_names: Sequence[str]
) -> list[Detection]:
    """One ``Detection`` per detection of ``segmentation``, masks as polygons."""
    detections = []
    for box, score, class_id, crop in zip(
        segmentation.boxes_xyxy,
        segmentation.scores,
        segmentation.class_ids,
        segmentation.masks,
        strict=True,
    ):
        polygons, holes = mask_to_polygons(crop.mask_hw, crop.offset_xy)
        x1, y1, x2, y2 = (float(value) for value in box)
        detections.append(
            Detection(
                class_id=int(class_id),
                class_name=class_names[int(class_id)],
                score=float(score),
                box_xyxy=(x1, y1, x2, y2),
                polygons=polygons,
                polygon_holes=holes,
                mask_area_px=crop.area_px,
            )
        )
    return detections


def _fix_input_shape(ov_model: ov.Model, model: ModelVersion) -> tuple[int, int]:
    """Pin the input to one ``(1, 3, H, W)`` image; return ``(H, W)``.

    A dynamic height or width takes the input size of the model metadata; any
    batch size becomes one.
    """
    if len(ov_model.inputs) != 1:
        raise ModelError(
            f"model {model.ref}: expected one input, got {len(ov_model.inputs)}"
        )
    shape = ov_model.input(0).get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4:
        raise ModelError(
            f"model {model.ref}: expected an input of shape (N, 3, H, W), got {shape}"
        )
    if shape[1].is_dynamic or shape[1].get_length() != 3:
        raise ModelError(
            f"model {model.ref}: expected 3 input channels, got input shape {shape}"
        )

    metadata_h, metadata_w = model.input_size_hw
    height = metadata_h if shape[2].is_dynamic else shape[2].get_length()
    width = metadata_w if shape[3].is_dynamic else shape[3].get_length()
    if (height, width) != (metadata_h, metadata_w):
        logger.warning(
            "model %s: the IR input is %dx%d but the metadata says %dx%d; "
            "the IR's is used",
            model.ref,
            width,
            height,
            metadata_w,
            metadata_h,
        )

    wanted = ov.PartialShape([1, 3, height, width])
    if shape != wanted:
        try:
            ov_model.reshape({ov_model.input(0): wanted})
        except RuntimeError as exc:
            raise ModelError(
                f"model {model.ref}: cannot reshape the input from {shape} to "
                f"{wanted}: {exc}"
            ) from exc
    return height, width


def _find_outputs(ov_model: ov.Model, model: ModelVersion) -> tuple[int, int]:
    """The indices of the prediction ``(1, 4 + nc + nm, anchors)`` and prototype
    ``(1, nm, mh, mw)`` outputs, checked against the class names."""
    shapes: list[Any] = [output.get_partial_shape() for output in ov_model.outputs]
    by_rank = {shape.rank.get_length(): index for index, shape in enumerate(shapes)}
    if len(shapes) != 2 or set(by_rank) != {3, 4} or any(s.is_dynamic for s in shapes):
        raise ModelError(
            f"model {model.ref}: expected two static outputs, a prediction "
            f"(1, 4 + classes + mask coefficients, anchors) and prototypes "
            f"(1, mask coefficients, H, W), got {[str(s) for s in shapes]}"
        )

    prediction = shapes[by_rank[3]].to_shape()
    protos = shapes[by_rank[4]].to_shape()
    num_classes, num_masks = len(model.class_names), protos[1]
    if prediction[1] != 4 + num_classes + num_masks:
        hint = (
            "; the export looks end-to-end (NMS in the graph), which is not supported"
            if prediction[2] == 6 + num_masks
            else ""
        )
        raise ModelError(
            f"model {model.ref}: expected a prediction of 4 + {num_classes} classes + "
            f"{num_masks} mask coefficients = {4 + num_classes + num_masks} "
            f"channels, got shape {prediction}{hint}"
        )
    return by_rank[3], by_rank[4]
