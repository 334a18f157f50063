"""From listed URIs to batches of pending ones, each recorded as queued as it leaves.

Both the producer (which sends the batches to the broker) and the embedded mode
(which hands them to local processes) plan a job this way: a page of listed URIs
at a time is checked against the database, images already done for the model
version are skipped unless forced, and the rest are cut into batches. A batch is
recorded as queued only by :func:`queue_batch`, right before it leaves, so a run
that stops halfway leaves no image recorded as queued that never left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from segbatch.errors import DatabaseError
from segbatch.producer.batching import unique_in_order
from segbatch.schema import store

logger = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Any]]


@dataclass
class PlanCounts:
    """Images listed, skipped as already done, and handed out in batches."""

    listed: int = 0
    skipped: int = 0
    queued: int = 0
    batches: int = 0


@contextmanager
def finished_once_drained(
    session_factory: SessionFactory, job_id: str
) -> Iterator[None]:
    """On leaving, mark the job finished if none of its images is queued.

    This holds for a run that stops early too (Ctrl-C, a broker lost): a job
    stopped before it queued anything, or whose queued images are all recorded,
    does not stay running. On the way out of such an exception a database error
    is logged, not raised, so that it does not hide the first one.
    """
    try:
        yield
    except BaseException:
        try:
            _finish_if_drained(session_factory, job_id)
        except DatabaseError as exc:
            logger.warning(
                "Job %s could not be checked for completion: %s", job_id, exc
            )
        raise
    _finish_if_drained(session_factory, job_id)


def _finish_if_drained(session_factory: SessionFactory, job_id: str) -> None:
    with session_factory() as session:
        store.finish_if_drained(session, job_id)


def pending_batches(
    pages: Iterable[Sequence[str]],
    *,
    session_factory: SessionFactory,
    job_id: str,
    model_version_id: int,
    batch_size: int,
    force: bool,
    counts: PlanCounts,
) -> Iterator[list[str]]:
    """Batches of ``batch_size`` URIs not done yet (the last may be short).

    Batches stay full across pages. ``counts.listed`` and ``counts.skipped``
    grow as pages are checked; nothing is recorded as queued here.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return _pending_batches(
        pages, session_factory, job_id, model_version_id, batch_size, force, counts
    )


def _pending_batches(
    pages: Iterable[Sequence[str]],
    session_factory: SessionFactory,
    job_id: str,
    model_version_id: int,
    batch_size: int,
    force: bool,
    counts: PlanCounts,
) -> Iterator[list[str]]:
    waiting: list[str] = []
    for page in pages:
        waiting += _select_page(
            session_factory, job_id, model_version_id, page, force, counts
        )
        while len(waiting) >= batch_size:
            batch, waiting = waiting[:batch_size], waiting[batch_size:]
            yield batch
    if waiting:
        yield waiting


def queue_batch(
    session_factory: SessionFactory,
    *,
    job_id: str,
    model_version_id: int,
    batch: Sequence[str],
    force: bool,
    counts: PlanCounts,
) -> list[str]:
    """Record ``batch`` as queued by the job; the URIs to hand out, in order.

    Left out are the URIs the job has queued already (a manifest may list one
    twice, pages apart) and those another job finished since the page was
    checked. ``counts.queued`` and ``counts.batches`` grow by what is returned.
    """
    with session_factory() as session:
        queued = store.mark_queued(
            session,
            job_id=job_id,
            model_version_id=model_version_id,
            uris=batch,
            force=force,
        )
    if queued:
        counts.queued += len(queued)
        counts.batches += 1
    return queued


def _select_page(
    session_factory: SessionFactory,
    job_id: str,
    model_version_id: int,
    page: Sequence[str],
    force: bool,
    counts: PlanCounts,
) -> list[str]:
    """The URIs of a page to process, in listing order; the done ones counted.

    A URI listed twice in a page counts once.
    """
    uris = unique_in_order(page)
    with session_factory() as session:
        if force:
            pending = uris
        else:
            pending = store.select_pending(session, uris, model_version_id)
        skipped = len(uris) - len(pending)
        if skipped:
            store.add_skipped(session, job_id, skipped)

    counts.listed += len(uris)
    counts.skipped += skipped
    return list(pending)
