"""From listed URIs to batches of pending ones, recorded as queued on the way.

Both the producer (which sends the batches to the broker) and the embedded mode
(which hands them to local processes) plan a job this way: a page of listed URIs
at a time, images already done for the model version skipped unless forced, the
rest marked queued before any batch that holds them leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from segbatch.producer.batching import unique_in_order
from segbatch.schema import store

SessionFactory = Callable[[], AbstractContextManager[Any]]


@dataclass
class PlanCounts:
    """Images listed, skipped as already done, and handed out in batches."""

    listed: int = 0
    skipped: int = 0
    queued: int = 0
    batches: int = 0


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
    """Batches of ``batch_size`` pending URIs (the last may be short).

    Batches stay full across pages. ``counts`` is updated as pages are recorded
    and batches are yielded.
    """
    waiting: list[str] = []
    for page in pages:
        waiting += record_page(
            session_factory, job_id, model_version_id, page, force, counts
        )
        while len(waiting) >= batch_size:
            batch, waiting = waiting[:batch_size], waiting[batch_size:]
            counts.queued += len(batch)
            counts.batches += 1
            yield batch
    if waiting:
        counts.queued += len(waiting)
        counts.batches += 1
        yield waiting


def record_page(
    session_factory: SessionFactory,
    job_id: str,
    model_version_id: int,
    page: Sequence[str],
    force: bool,
    counts: PlanCounts,
) -> list[str]:
    """Mark a page of listed URIs queued; the ones to process, in listing order.

    Each store call commits on its own; a URI listed twice in a page counts once.
    """
    uris = unique_in_order(page)
    with session_factory() as session:
        if force:
            pending = uris
        else:
            pending = store.select_pending(session, uris, model_version_id)
        if pending:
            store.mark_queued(
                session,
                job_id=job_id,
                model_version_id=model_version_id,
                uris=pending,
                force=force,
            )
        skipped = len(uris) - len(pending)
        if skipped:
            store.add_skipped(session, job_id, skipped)

    counts.listed += len(uris)
    counts.skipped += skipped
    return list(pending)
