"""One batch of image URIs in, one :class:`ImageResult` per URI out.

The same code runs in a Celery worker process and in an embedded-mode process:

1. fetch and decode every image concurrently (threads: boto3 and Pillow release
   the GIL while they wait or decode);
2. segment the decoded images together, so OpenVINO's parallel infer requests are
   kept busy;
3. give each URI a result: its detections, or the reason it failed.

A bad image fails alone: its error becomes the result's ``failure_kind`` and
``failure_message`` and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from segbatch.config import Settings
from segbatch.errors import SegbatchError
from segbatch.storage import read_object
from segbatch.workers.decode import decode_image
from segbatch.workers.model import SegmentationModel
from segbatch.workers.results import ImageResult

logger = logging.getLogger(__name__)


@dataclass
class _Loaded:
    result: ImageResult
    image_rgb: np.ndarray | None


class BatchProcessor:
    """Turns batches of URIs into results with one loaded model."""

    def __init__(
        self, model: SegmentationModel, settings: Settings, s3_client: Any | None
    ) -> None:
        self.model = model
        self.settings = settings
        self.s3_client = s3_client
        self._pool = ThreadPoolExecutor(
            max_workers=settings.fetch_concurrency, thread_name_prefix="segbatch-load"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def process(self, uris: Sequence[str]) -> list[ImageResult]:
        """Results in the order of ``uris`` (a URI given twice is processed once)."""
        unique = list(dict.fromkeys(uris))
        started = time.perf_counter()

        loaded = list(self._pool.map(self._load, unique))
        images = [item for item in loaded if item.image_rgb is not None]
        loaded_at = time.perf_counter()

        if images:
            self._segment(images)
        finished = time.perf_counter()

        failed = sum(1 for item in loaded if not item.result.ok)
        logger.info(
            "batch of %d: %d segmented, %d failed, load %.0f ms, segment %.0f ms",
            len(unique),
            len(unique) - failed,
            failed,
            (loaded_at - started) * 1000,
            (finished - loaded_at) * 1000,
        )
        return [item.result for item in loaded]

    def _load(self, uri: str) -> _Loaded:
        result = ImageResult(uri=uri)
        try:
            started = time.perf_counter()
            stored = read_object(
                uri,
                client=self.s3_client,
                max_bytes=self.settings.max_object_bytes,
            )
            result.etag, result.size_bytes = stored.etag, stored.size_bytes
            fetched = time.perf_counter()

            image_rgb = decode_image(
                stored.data, name=uri, max_pixels=self.settings.max_image_pixels
            )
            result.height, result.width = image_rgb.shape[:2]
            result.timings_ms["fetch"] = (fetched - started) * 1000
            result.timings_ms["decode"] = (time.perf_counter() - fetched) * 1000
            logger.debug("loaded %s (%dx%d)", uri, result.width, result.height)
            return _Loaded(result, image_rgb)
        except SegbatchError as exc:
            _fail(result, exc)
            return _Loaded(result, None)

    def _segment(self, images: list[_Loaded]) -> None:
        started = time.perf_counter()
        try:
            detections = self.model.segment(
                [item.image_rgb for item in images if item.image_rgb is not None],
                confidence=self.settings.confidence,
            )
        except SegbatchError as exc:
            for item in images:
                _fail(item.result, exc)
            return

        per_image_ms = (time.perf_counter() - started) * 1000 / len(images)
        for item, found in zip(images, detections, strict=True):
            item.result.detections = found
            item.result.timings_ms["segment"] = per_image_ms
            item.image_rgb = None


def _fail(result: ImageResult, exc: SegbatchError) -> None:
    result.failure_kind = exc.kind
    result.failure_message = str(exc)
    logger.warning("%s failed (%s): %s", result.uri, exc.kind, exc)
