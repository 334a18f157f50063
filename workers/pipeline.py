"""One batch of image URIs in, one :class:`ImageResult` per URI out.

The same code runs in a Celery worker process and in an embedded-mode process:

1. fetch and decode the images concurrently (threads: boto3, Pillow and OpenCV
   release the GIL while they wait or decode), at most ``fetch_concurrency`` at a
   time, so a worker never holds more than that many full-size images;
2. stream each decoded image into the model as soon as it is ready: it is
   letterboxed, released, and inferred while the next ones load, OpenVINO's
   parallel infer requests kept busy;
3. give each URI a result: its detections, or the reason it failed;
4. fetch again, after a pause, the images the store could not serve for now.

A bad image fails alone: its error becomes the result's ``failure_kind`` and
``failure_message`` and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from segbatch import defaults
from segbatch.backoff import pauses
from segbatch.config import Settings
from segbatch.errors import SegbatchError, StorageUnavailable
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

    def process(
        self,
        uris: Sequence[str],
        *,
        storage_wait_s: float = defaults.STORAGE_WAIT_S,
        first_pause_s: float = defaults.FIRST_RETRY_PAUSE_S,
        longest_pause_s: float = defaults.LONGEST_RETRY_PAUSE_S,
    ) -> list[ImageResult]:
        """Results in the order of ``uris`` (a URI given twice is processed once).

        Images the store cannot serve for now (``StorageUnavailable``) are
        processed again after a pause, doubling from ``first_pause_s`` up to
        ``longest_pause_s``, for up to ``storage_wait_s`` seconds; those still
        unavailable then keep that failure.
        """
        results = self._process_once(list(dict.fromkeys(uris)))

        retry_pauses = pauses(storage_wait_s, first_pause_s, longest_pause_s)
        while unavailable := [
            result.uri
            for result in results
            if result.failure_kind == StorageUnavailable.kind
        ]:
            pause_s = next(retry_pauses, None)
            if pause_s is None:
                break
            logger.warning(
                "%d of %d images could not be fetched for now, trying again in %.1f s",
                len(unavailable),
                len(results),
                pause_s,
            )
            time.sleep(pause_s)
            again = {result.uri: result for result in self._process_once(unavailable)}
            results = [again.get(result.uri, result) for result in results]
        return results

    def _process_once(self, unique: Sequence[str]) -> list[ImageResult]:
        started = time.perf_counter()
        loaded: list[_Loaded] = []

        def images() -> Iterator[np.ndarray]:
            for item in self._loads(unique):
                loaded.append(item)
                if item.image_rgb is not None:
                    image_rgb, item.image_rgb = item.image_rgb, None
                    yield image_rgb

        self._segment(images(), loaded)
        failed = sum(1 for item in loaded if not item.result.ok)
        logger.info(
            "batch of %d: %d segmented, %d failed in %.0f ms",
            len(unique),
            len(unique) - failed,
            failed,
            (time.perf_counter() - started) * 1000,
        )
        return [item.result for item in loaded]

    def _loads(self, uris: Sequence[str]) -> Iterator[_Loaded]:
        """Load ``uris`` in order, with at most ``fetch_concurrency`` in flight."""
        remaining = iter(uris)
        window: deque[Future[_Loaded]] = deque(
            self._pool.submit(self._load, uri)
            for uri in islice(remaining, self.settings.fetch_concurrency)
        )
        while window:
            item = window.popleft().result()
            for uri in islice(remaining, 1):
                window.append(self._pool.submit(self._load, uri))
            yield item

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

    def _segment(self, images: Iterator[np.ndarray], loaded: list[_Loaded]) -> None:
        """Segment the images as they load; ``loaded`` fills as they are taken."""
        started = time.perf_counter()
        try:
            detections = self.model.segment(
                images,
                confidence=self.settings.confidence,
                class_agnostic=self.settings.class_agnostic_nms,
            )
        except SegbatchError as exc:
            for _ in images:  # the rest still gets its fetch and decode outcome
                pass
            for item in loaded:
                if item.result.ok:
                    _fail(item.result, exc)
            return

        segmented = [item for item in loaded if item.result.ok]
        per_image_ms = (time.perf_counter() - started) * 1000 / max(len(segmented), 1)
        for item, found in zip(segmented, detections, strict=True):
            item.result.detections = found
            item.result.timings_ms["segment"] = per_image_ms


def _fail(result: ImageResult, exc: SegbatchError) -> None:
    result.failure_kind = exc.kind
    result.failure_message = str(exc)
    logger.warning("%s failed (%s): %s", result.uri, exc.kind, exc)
