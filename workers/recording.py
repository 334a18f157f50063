"""Writing a batch's outcome: waiting out a database that is briefly unavailable,
and recording a batch that cannot be processed at all as failed.

A batch's results cost a fetch and an inference per image, so a worker whose
database restarts or fails over keeps them and tries the write again instead of
giving the batch back to the queue at the first refused connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from segbatch import defaults
from segbatch.backoff import pauses
from segbatch.errors import DatabaseUnavailable, SegbatchError
from segbatch.schema import store
from segbatch.workers.results import ImageResult

logger = logging.getLogger(__name__)


def record_batch(
    sessions: sessionmaker[Session],
    *,
    job_id: str,
    model_version_id: int,
    results: Sequence[ImageResult],
    wait_s: float = defaults.DATABASE_WAIT_S,
    first_pause_s: float = defaults.FIRST_RETRY_PAUSE_S,
    longest_pause_s: float = defaults.LONGEST_RETRY_PAUSE_S,
) -> store.RecordedCounts:
    """Record ``results`` for ``job_id``, trying again while the database is away.

    Tries again after ``DatabaseUnavailable`` only, pausing ``first_pause_s``,
    then twice as long each time up to ``longest_pause_s``, for up to ``wait_s``
    seconds in all; any other ``DatabaseError`` is raised at once.

    Raises:
        DatabaseUnavailable: the database is still unavailable after ``wait_s``.
        DatabaseError: the results cannot be recorded.
    """
    retry_pauses = pauses(wait_s, first_pause_s, longest_pause_s)
    while True:
        try:
            with sessions() as session:
                return store.record_results(
                    session,
                    job_id=job_id,
                    model_version_id=model_version_id,
                    results=results,
                )
        except DatabaseUnavailable as exc:
            pause_s = next(retry_pauses, None)
            if pause_s is None:
                raise
            logger.warning(
                "job %s: database unavailable, trying again in %.1f s: %s",
                job_id,
                pause_s,
                exc,
            )
            time.sleep(pause_s)


def record_batch_failure(
    sessions: sessionmaker[Session],
    *,
    job_id: str,
    uris: Sequence[str],
    exc: BaseException,
) -> store.RecordedCounts | None:
    """Record every image of a batch that could not be processed as failed.

    The images are recorded under the model version of the job, whatever model
    this process serves, so the job finishes and running the producer again
    queues them. Images already done stay done. A database that cannot take
    even this is logged, and the images stay queued; ``None`` is returned then.
    """
    if isinstance(exc, SegbatchError):
        kind, message = exc.kind, str(exc)
    else:
        kind = SegbatchError.kind
        message = f"the batch failed: {type(exc).__name__}: {exc}"
    results = [
        ImageResult(uri=uri, failure_kind=kind, failure_message=message)
        for uri in dict.fromkeys(uris)
    ]
    try:
        with sessions() as session:
            model_version_id = store.model_version_of_job(session, job_id)
            counts = store.record_results(
                session,
                job_id=job_id,
                model_version_id=model_version_id,
                results=results,
            )
    except SegbatchError as error:
        logger.error(
            "job %s: %d images stay queued, their failure (%s) unrecorded: %s",
            job_id,
            len(results),
            kind,
            error,
        )
        return None

    logger.error(
        "job %s: batch of %d recorded as failed (%s): %s",
        job_id,
        len(results),
        kind,
        message,
    )
    return counts
