"""The embedded mode: a whole job on one machine, no broker, no services.

The parent process lists the source, records the job and its images, and hands
batches to local worker processes (spawned, each compiling its own model); it is
the only process that writes to the database, which suits SQLite. The batches go
through the same :class:`~segbatch.workers.pipeline.BatchProcessor` as in a Celery
worker, and the results through the same exactly-once bookkeeping.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from segbatch import defaults
from segbatch.config import Settings
from segbatch.models import registry
from segbatch.producer.batching import chunked
from segbatch.producer.listing import iter_image_uris
from segbatch.producer.planning import (
    PlanCounts,
    finished_once_drained,
    pending_batches,
    queue_batch,
)
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory, upgrade
from segbatch.workers.pipeline import BatchProcessor
from segbatch.workers.results import ImageResult
from segbatch.workers.runtime import load_processor

logger = logging.getLogger(__name__)

BATCHES_IN_FLIGHT_PER_PROCESS = 2


@dataclass(frozen=True)
class EmbeddedSummary:
    job_id: str
    source: str
    model: str
    database: str
    listed: int
    skipped: int
    done: int
    failed: int
    detections: int
    elapsed_s: float
    images_per_s: float


def run_embedded(
    source: str, settings: Settings, *, processes: int = 1, force: bool = False
) -> EmbeddedSummary:
    """Segment every image of ``source`` and record the results; return a summary.

    Raises:
        ObjectNotFound: ``source`` names nothing; no database or job is made.
        StorageError: ``source`` cannot be listed.
    """
    started = time.perf_counter()
    model_version = registry.resolve(settings.model, settings.models_dir)
    identity = registry.identity(model_version)
    pages = chunked(
        (info.uri for info in iter_image_uris(source)), defaults.ENQUEUE_PAGE_SIZE
    )
    # Listed before anything is recorded, so that a path that is not there
    # leaves neither a database nor a job behind.
    first_page: list[str] = next(pages, [])

    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    with sessions() as session:
        model_version_id = store.ensure_model_version(session, **identity.__dict__)
        job_id = store.create_job(
            session, source=source, model_version_id=model_version_id
        )
    logger.info("job %s: %s with %s", job_id, source, model_version.ref)

    plan = PlanCounts()
    pending = pending_batches(
        itertools.chain([first_page], pages),
        session_factory=sessions,
        job_id=job_id,
        model_version_id=model_version_id,
        batch_size=settings.batch_size,
        force=force,
        counts=plan,
    )

    def queued_batches() -> Iterator[list[str]]:
        """Each batch recorded as queued when a process is free to take it."""
        for batch in pending:
            queued = queue_batch(
                sessions,
                job_id=job_id,
                model_version_id=model_version_id,
                batch=batch,
                force=force,
                counts=plan,
            )
            if queued:
                yield queued

    done = failed = detections = 0
    with finished_once_drained(sessions, job_id):
        for results in _process(queued_batches(), settings, processes):
            with sessions() as session:
                counts = store.record_results(
                    session,
                    job_id=job_id,
                    model_version_id=model_version_id,
                    results=results,
                )
            done += counts.done
            failed += counts.failed
            detections += counts.detections

    elapsed_s = time.perf_counter() - started
    return EmbeddedSummary(
        job_id=job_id,
        source=source,
        model=model_version.ref,
        database=settings.database_url,
        listed=plan.listed,
        skipped=plan.skipped,
        done=done,
        failed=failed,
        detections=detections,
        elapsed_s=round(elapsed_s, 2),
        images_per_s=round((done + failed) / elapsed_s, 2) if elapsed_s else 0.0,
    )


def _process(
    batches: Iterator[list[str]], settings: Settings, processes: int
) -> Iterator[list[ImageResult]]:
    if processes <= 1:
        _, processor = load_processor(settings)
        try:
            for batch in batches:
                yield processor.process(batch)
        finally:
            processor.close()
        return

    context = multiprocessing.get_context("spawn")
    limit = processes * BATCHES_IN_FLIGHT_PER_PROCESS
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_process, initargs=(settings,)
    ) as pool:
        in_flight: set[Future[list[ImageResult]]] = set()
        for batch in batches:
            in_flight.add(pool.submit(_process_batch, batch))
            if len(in_flight) >= limit:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        for future in in_flight:
            yield future.result()


_processor: BatchProcessor | None = None


def _init_process(settings: Settings) -> None:
    global _processor
    _, _processor = load_processor(settings)


def _process_batch(uris: list[str]) -> list[ImageResult]:
    assert _processor is not None, "worker process started without its model"
    return _processor.process(uris)
