"""Train a YOLO segmentation model from its architecture file, offline, resumably.

No pretrained weights are fetched: the network starts from the random
initialisation of its architecture file (``yolo11n-seg.yaml`` by default), or from
weights the caller names (an earlier version of the same model, trained here), in
which case a fresh schedule continues training them. Plots are
off because Ultralytics downloads a font to draw them. A run keeps
``weights/last.pt`` after every epoch; training the same run folder again resumes
from it, with the schedule and optimiser state it had.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_ARCHITECTURE = "yolo11n-seg.yaml"


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides the trained weights, recorded in the model metadata."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = 60
    imgsz: int = 320
    batch: int = 16
    seed: int = 0
    close_mosaic: int = 10
    workers: int = 2
    initial_weights: str | None = None  # a checkpoint to start from, else random

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _offline() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("ULTRALYTICS_OFFLINE", "1")


def train(data_yaml: Path, run_dir: Path, recipe: TrainRecipe) -> Path:
    """Train (or resume) in ``run_dir``; return the path of the best weights."""
    _offline()
    from ultralytics import YOLO  # the toolchain extra; workers never import this
    from ultralytics.utils import torch_utils

    # Ultralytics sets torch's CPU threads to one fewer than the machine has, to
    # leave a core to data loading; it also loads data in the training process on
    # a CPU, so that core idles. Train on all of them.
    torch_utils.NUM_THREADS = os.cpu_count() or 1

    last = run_dir / "weights" / "last.pt"
    if last.exists():
        logger.info("resuming %s from %s", run_dir, last)
        # The dataset is named again so that a run resumed on another machine
        # finds it wherever it was regenerated.
        YOLO(str(last)).train(resume=True, data=str(data_yaml))
    else:
        start = recipe.initial_weights or recipe.architecture
        logger.info("training %s from %s in %s", recipe.architecture, start, run_dir)
        YOLO(start).train(
            data=str(data_yaml),
            epochs=recipe.epochs,
            imgsz=recipe.imgsz,
            batch=recipe.batch,
            seed=recipe.seed,
            close_mosaic=recipe.close_mosaic,
            workers=recipe.workers,
            project=str(run_dir.parent.resolve()),
            name=run_dir.name,
            exist_ok=True,
            pretrained=recipe.initial_weights is not None,
            amp=False,
            plots=False,
            cache="ram",
            device="cpu",
            deterministic=True,
        )
    return run_dir / "weights" / "best.pt"
