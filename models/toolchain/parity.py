"""Reference outputs of Ultralytics' own ``predict`` for the workers' parity test.

Regenerate the fixture of a model version, from the repository root, with the
toolchain environment (the one with ultralytics)::

    YOLO_OFFLINE=1 .venv/bin/python -m segbatch.models.toolchain.parity shapes-seg/1

It writes ``tests/fixtures/parity/shapes-seg-1.json``. By default the model is read
from ``$SEGBATCH_MODELS_DIR`` (else the repository's ``models/``), the images are
``models/demo/*.jpg`` and predict runs at its defaults (confidence 0.25, IoU 0.7, at
most 300 detections) with ``retina_masks=True``, the masks the workers make;
``--help`` lists the options.

For each image the fixture records what Ultralytics 8.4 gives on the model's FP16 IR
computed in 32-bit floats: class ids, scores, boxes ``xyxy`` in image pixels and the
masks at the image's resolution, as COCO RLE. Images are decoded by
the workers' own decoder and handed to Ultralytics as arrays, so both sides see the
same pixels; their sha256 is recorded so that the test notices a decoder change.

The comparison is of post-processing, which every precision shares, so it is made
where the network's own numbers are the same on every x86 CPU: INT8 kernels round
differently from one instruction set to the next (scores move by 1e-2 between
machines), 32-bit float kernels do not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from segbatch import defaults
from segbatch.models import registry
from segbatch.workers.model import INFERENCE_PRECISION

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "parity"
DEFAULT_IMAGES = "models/demo/*.jpg"
PRECISION = "fp16"  # the IR, computed in COMPUTED_IN like the workers compute it
COMPUTED_IN = INFERENCE_PRECISION
# Ultralytics picks its OpenVINO backend by this ending of the folder name.
ULTRALYTICS_OPENVINO_SUFFIX = "_openvino_model"


def pixels_sha256(image_rgb: np.ndarray) -> str:
    """A digest of decoded pixels and their shape."""
    digest = hashlib.sha256(repr(image_rgb.shape).encode())
    digest.update(np.ascontiguousarray(image_rgb).tobytes())
    return digest.hexdigest()


def fixture_path(model: registry.ModelVersion) -> Path:
    return FIXTURE_DIR / f"{model.name}-{model.version}.json"


def reference(
    model: registry.ModelVersion,
    image_paths: list[Path],
    *,
    confidence: float = defaults.CONFIDENCE_THRESHOLD,
    iou: float = defaults.IOU_THRESHOLD,
    max_det: int = defaults.MAX_DETECTIONS,
) -> dict[str, Any]:
    """Ultralytics' predictions on ``image_paths`` with the FP16 IR of ``model``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import openvino
    import ultralytics
    from ultralytics import YOLO  # the toolchain extra; workers never import this

    from segbatch.workers.decode import decode_image

    ir_files = registry.ir_files(model, PRECISION)
    registry.verify(model, ir_files)
    ir_dir = model.ir_path(PRECISION).parent

    with tempfile.TemporaryDirectory() as scratch:
        # A link whose name Ultralytics recognises; it reads the IR and the
        # metadata.yaml the exporter left beside it.
        link = Path(scratch) / f"{model.name}{ULTRALYTICS_OPENVINO_SUFFIX}"
        link.symlink_to(ir_dir.resolve(), target_is_directory=True)
        yolo = YOLO(str(link), task="segment")

        images = []
        # Ultralytics makes its own OpenVINO Core when it loads the IR.
        with mock.patch.object(openvino, "Core", _core_computing_in(COMPUTED_IN)):
            for path in image_paths:
                image_rgb = decode_image(path.read_bytes(), name=str(path))
                [result] = yolo.predict(
                    np.ascontiguousarray(image_rgb[..., ::-1]),  # Ultralytics takes BGR
                    conf=confidence,
                    iou=iou,
                    max_det=max_det,
                    retina_masks=True,
                    verbose=False,
                )
                images.append(
                    {
                        "path": path.resolve().relative_to(REPO_ROOT).as_posix(),
                        "size_hw": list(image_rgb.shape[:2]),
                        "pixels_sha256": pixels_sha256(image_rgb),
                        "detections": _detections(result),
                    }
                )
                logger.info("%s: %d detections", path, len(images[-1]["detections"]))
        _require_computed_in(yolo, COMPUTED_IN)

    return {
        "model": model.ref,
        "precision": PRECISION,
        "computed_in": COMPUTED_IN,
        "ir_sha256": {relative: model.sha256(relative) for relative in ir_files},
        "ultralytics_version": ultralytics.__version__,
        "confidence": confidence,
        "iou": iou,
        "max_det": max_det,
        "retina_masks": True,
        "images": images,
    }


def _core_computing_in(precision: str) -> type:
    """An ``openvino.Core`` whose CPU computes float layers in ``precision``."""
    import openvino

    class Core(openvino.Core):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_property("CPU", {"INFERENCE_PRECISION_HINT": precision})

    return Core


def _require_computed_in(yolo: Any, precision: str) -> None:
    """Refuse a fixture that OpenVINO computed in another precision."""
    compiled = yolo.predictor.model.backend.ov_compiled_model
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if used != precision:
        raise SystemExit(f"OpenVINO computed the model in {used}, not {precision}")


def _detections(result: Any) -> list[dict[str, Any]]:
    """Boxes, scores, classes and image-resolution masks of one predict result."""
    from faster_coco_eval.core import mask as mask_util

    if result.masks is None or len(result.boxes) == 0:
        return []
    masks_nhw = (result.masks.data > 0.5).cpu().numpy().astype(np.uint8)
    rles = mask_util.encode(np.asfortranarray(masks_nhw.transpose(1, 2, 0)))

    detections = []
    for box, score, class_id, rle in zip(
        result.boxes.xyxy.cpu().numpy().tolist(),
        result.boxes.conf.cpu().numpy().tolist(),
        result.boxes.cls.cpu().numpy().astype(int).tolist(),
        rles,
        strict=True,
    ):
        counts = rle["counts"]
        detections.append(
            {
                "class_id": class_id,
                "score": score,
                "box_xyxy": box,
                "mask_rle": {
                    "size": [int(side) for side in rle["size"]],
                    "counts": counts.decode("ascii")
                    if isinstance(counts, bytes)
                    else counts,
                },
            }
        )
    return detections


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="name/version, e.g. shapes-seg/1")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("SEGBATCH_MODELS_DIR", REPO_ROOT / "models")),
    )
    parser.add_argument(
        "--images", default=DEFAULT_IMAGES, help="glob relative to the repository"
    )
    parser.add_argument("--conf", type=float, default=defaults.CONFIDENCE_THRESHOLD)
    parser.add_argument("--iou", type=float, default=defaults.IOU_THRESHOLD)
    parser.add_argument("--max-det", type=int, default=defaults.MAX_DETECTIONS)
    parser.add_argument("--out", type=Path, help="default: tests/fixtures/parity/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = registry.resolve(args.model, args.models_dir)
    image_paths = sorted(REPO_ROOT.glob(args.images))
    if not image_paths:
        parser.error(f"no image matches {args.images} under {REPO_ROOT}")

    fixture = reference(
        model, image_paths, confidence=args.conf, iou=args.iou, max_det=args.max_det
    )
    out = args.out or fixture_path(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    total = sum(len(image["detections"]) for image in fixture["images"])
    logger.info("wrote %s: %d images, %d detections", out, len(image_paths), total)


if __name__ == "__main__":
    main()
