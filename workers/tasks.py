"""The Celery task that segments one batch and records its results."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from segbatch import defaults
from segbatch.errors import DatabaseUnavailable, ModelError, SegbatchError
from segbatch.workers.celery_app import app
from segbatch.workers.recording import record_batch, record_batch_failure
from segbatch.workers.runtime import get_runtime

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _load_after_fork(**_: object) -> None:
    """Compile the model in each pool process as it starts, never in the parent."""
    get_runtime()


class BatchTask(Task):
    """A batch task whose final failure is recorded against each of its images.

    Without that, a batch that fails for good (a model this worker does not
    serve, a database that stayed away through every retry, an unforeseen
    error) would leave its images queued, and its job running, for ever.
    """

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: Any,
    ) -> None:
        job_id, _model_ref, uris = args
        try:
            sessions = get_runtime().sessions
        except SegbatchError as error:
            logger.error(
                "job %s: %d images stay queued, this process cannot record: %s",
                job_id,
                len(uris),
                error,
            )
            return
        assert sessions is not None
        record_batch_failure(sessions, job_id=job_id, uris=uris, exc=exc)


@app.task(
    base=BatchTask,
    name=defaults.SEGMENT_TASK_NAME,
    autoretry_for=(DatabaseUnavailable,),
    retry_backoff=True,
    max_retries=defaults.TASK_MAX_RETRIES,
)
def segment_batch(job_id: str, model_ref: str, uris: list[str]) -> dict[str, int]:
    """Segment ``uris`` with ``model_ref`` and record every result for ``job_id``.

    Results are committed in one transaction before the message is acknowledged;
    a redelivered batch rewrites the same rows. A database that is unavailable
    is waited for, then the batch is retried from the queue.
    """
    runtime = get_runtime()
    if model_ref != runtime.model.ref:
        raise ModelError(
            f"job {job_id} asks for model {model_ref}, this worker serves "
            f"{runtime.model.ref}; run workers with SEGBATCH_MODEL={model_ref}"
        )
    assert runtime.sessions is not None and runtime.model_version_id is not None

    started = time.perf_counter()
    results = runtime.processor.process(uris)
    counts = record_batch(
        runtime.sessions,
        job_id=job_id,
        model_version_id=runtime.model_version_id,
        results=results,
    )
    logger.info(
        "job %s: batch of %d recorded in %.2f s",
        job_id,
        len(uris),
        time.perf_counter() - started,
    )
    return dataclasses.asdict(counts)
