"""The Celery task that segments one batch and records its results."""

from __future__ import annotations

import dataclasses
import logging
import time

from celery.signals import worker_process_init

from segbatch import defaults
from segbatch.errors import DatabaseError, ModelError
from segbatch.schema import store
from segbatch.workers.celery_app import app
from segbatch.workers.runtime import get_runtime

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _load_after_fork(**_: object) -> None:
    """Compile the model in each pool process as it starts, never in the parent."""
    get_runtime()


@app.task(
    name=defaults.SEGMENT_TASK_NAME,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=defaults.TASK_MAX_RETRIES,
)
def segment_batch(job_id: str, model_ref: str, uris: list[str]) -> dict[str, int]:
    """Segment ``uris`` with ``model_ref`` and record every result for ``job_id``.

    Results are committed in one transaction before the message is acknowledged;
    a redelivered batch rewrites the same rows.
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
    with runtime.sessions() as session:
        counts = store.record_results(
            session,
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
