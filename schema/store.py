"""Exactly-once bookkeeping of model versions, jobs, images and detections.

Every function runs in a transaction of its own: it commits its work before it
returns, or rolls it back and raises ``DatabaseError`` naming the job and the URIs
concerned. Give it a session with no uncommitted work you mean to keep apart; a
``session_factory`` session used for one call (``with factory() as session``) is
the simplest.

An image is one row per URI and model version. Recording a result locks that row,
reads the state it reached, updates it and replaces its detections, all in one
transaction: two workers recording the same image take turns (on the row lock in
PostgreSQL, on the write lock in SQLite) and the second sees the first's result.
So an image keeps exactly one set of detections, the latest, and the job counters
move only when an image changes state.

A job is finished once none of its images is queued, and running again when it
queues more: between two pages of a listing it may look finished for a moment.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from segbatch.errors import ChecksumMismatch, JobNotFound
from segbatch.schema._recording import RecordedCounts, record_results
from segbatch.schema._rows import (
    JobDeltas,
    as_utc,
    dialect_insert,
    finish_drained_jobs,
    lock_images,
    name_uris,
    now_utc,
    transaction,
)
from segbatch.schema.tables import (
    DetectionRow,
    Image,
    ImageState,
    Job,
    JobState,
    ModelVersion,
    uri_sha256,
)

__all__ = [
    "JobSummary",
    "RecordedCounts",
    "add_skipped",
    "create_job",
    "ensure_model_version",
    "finish_if_drained",
    "job_summary",
    "mark_queued",
    "model_version_of_job",
    "record_results",
    "select_pending",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSummary:
    """A job's progress. ``model`` is ``name/version``; times are UTC."""

    id: str
    source: str
    model: str
    precision: str
    state: str
    queued: int
    done: int
    failed: int
    skipped: int
    created_at: datetime
    finished_at: datetime | None
    detections: int


def ensure_model_version(
    session: Session, *, name: str, version: str, precision: str, sha256: str
) -> int:
    """The id of a model version, registered on first use.

    Raises:
        ChecksumMismatch: the version is registered with other weights.
    """
    with transaction(session, f"could not register model {name}/{version}"):
        session.execute(
            dialect_insert(session, ModelVersion)
            .values(name=name, version=version, precision=precision, sha256=sha256)
            .on_conflict_do_nothing(index_elements=["name", "version", "precision"])
        )
        model_id, recorded_sha256 = session.execute(
            select(ModelVersion.id, ModelVersion.sha256).where(
                ModelVersion.name == name,
                ModelVersion.version == version,
                ModelVersion.precision == precision,
            )
        ).one()
        if recorded_sha256 != sha256:
            raise ChecksumMismatch(
                f"model {name}/{version} ({precision}) is registered with weights of "
                f"sha256 {recorded_sha256}, got weights of sha256 {sha256}; "
                "different weights need a new version"
            )
    return int(model_id)


def create_job(session: Session, *, source: str, model_version_id: int) -> str:
    """Start a job over ``source``; returns its id (a UUID)."""
    job_id = str(uuid.uuid4())
    failure = f"could not create a job over {source!r}"
    with transaction(session, failure):
        session.execute(
            insert(Job).values(
                id=job_id,
                source=source,
                model_version_id=model_version_id,
                state=JobState.RUNNING,
            )
        )
    logger.info("Job %s created over %s.", job_id, source)
    return job_id


def select_pending(
    session: Session, uris: Sequence[str], model_version_id: int
) -> list[str]:
    """Those of ``uris`` not done yet for the model version, in their order.

    A URI given twice is returned once. One query per call, so pass pages of
    about a thousand URIs.
    """
    digests = {uri_sha256(uri) for uri in uris}
    if not digests:
        return []

    with transaction(session, f"could not look up {name_uris(uris)}"):
        done = set(
            session.scalars(
                select(Image.uri_sha256).where(
                    Image.model_version_id == model_version_id,
                    Image.state == ImageState.DONE,
                    Image.uri_sha256.in_(digests),
                )
            )
        )
    pending = (uri for uri in dict.fromkeys(uris) if uri_sha256(uri) not in done)
    return list(pending)


def mark_queued(
    session: Session,
    *,
    job_id: str,
    model_version_id: int,
    uris: Sequence[str],
    force: bool = False,
) -> list[str]:
    """Record ``uris`` as queued by ``job_id``; the ones this call queued, in order.

    A done image stays done unless ``force``, and an image this job has queued
    already stays as it is: neither is returned, so a caller sends only what is
    returned. An image queued by another job, or failed, passes to this job; a
    job left with no image queued by that is finished. ``jobs.queued`` grows by
    the images new to this job; an image this job queues again moves from its
    done or failed count back to pending. A job that queues anything is running
    again.
    """
    failure = f"could not queue {name_uris(uris)} for job {job_id}"
    with transaction(session, failure):
        rows = lock_images(
            session, job_id=job_id, model_version_id=model_version_id, uris=uris
        )
        deltas = JobDeltas()
        queued: set[str] = set()
        requeued = []
        for row in rows:
            if row.inserted:
                deltas.queue(job_id)
                queued.add(row.uri)
                continue
            if row.state == ImageState.QUEUED and row.job_id == job_id:
                continue
            if row.state == ImageState.DONE and not force:
                continue
            if row.job_id == job_id:
                deltas.move(job_id, row.state, ImageState.QUEUED)
            else:
                deltas.queue(job_id)
            queued.add(row.uri)
            requeued.append(row)

        if requeued:
            queued_at = now_utc()
            changes = {
                "state": ImageState.QUEUED,
                "job_id": job_id,
                "queued_at": queued_at,
                "attempts": 0,
                "failure_kind": None,
                "failure_message": None,
                "finished_at": None,
            }
            session.execute(
                update(Image), [{"id": row.id, **changes} for row in requeued]
            )

        deltas.write(session, reopen=job_id if queued else None)
        finish_drained_jobs(session, {row.job_id for row in requeued} - {job_id})
    logger.debug("Job %s queued %s of %s images.", job_id, len(queued), len(uris))
    return [uri for uri in dict.fromkeys(uris) if uri in queued]


def add_skipped(session: Session, job_id: str, count: int) -> None:
    """Count ``count`` images left out of ``job_id`` because they were done."""
    if count < 0:
        raise ValueError(f"expected a count of skipped images >= 0, got {count}")

    with transaction(session, f"could not count skipped images of job {job_id}"):
        found = session.scalar(
            update(Job)
            .where(Job.id == job_id)
            .values(skipped=Job.skipped + count)
            .returning(Job.id)
        )
        if found is None:
            raise JobNotFound(f"expected a job with id {job_id!r}, found none")


def finish_if_drained(session: Session, job_id: str) -> bool:
    """Mark ``job_id`` finished if none of its images is queued; whether it is.

    Recording results finishes a job on its own. A producer calls this once it
    has queued everything, for a job whose images were all skipped, or all
    recorded before the last of them was queued.
    """
    with transaction(session, f"could not finish job {job_id}"):
        finish_drained_jobs(session, {job_id})
        state = session.scalar(select(Job.state).where(Job.id == job_id))
        if state is None:
            raise JobNotFound(f"expected a job with id {job_id!r}, found none")
    return state == JobState.FINISHED


def model_version_of_job(session: Session, job_id: str) -> int:
    """The id of the model version ``job_id`` runs."""
    with transaction(session, f"could not look up job {job_id}"):
        model_version_id = session.scalar(
            select(Job.model_version_id).where(Job.id == job_id)
        )
        if model_version_id is None:
            raise JobNotFound(f"expected a job with id {job_id!r}, found none")
    return int(model_version_id)


def job_summary(session: Session, job_id: str) -> JobSummary:
    """Where ``job_id`` stands, with the number of detections of its images."""
    with transaction(session, f"could not summarise job {job_id}"):
        row = session.execute(
            select(
                Job.id,
                Job.source,
                ModelVersion.name,
                ModelVersion.version,
                ModelVersion.precision,
                Job.state,
                Job.queued,
                Job.done,
                Job.failed,
                Job.skipped,
                Job.created_at,
                Job.finished_at,
            )
            .join(ModelVersion, Job.model_version_id == ModelVersion.id)
            .where(Job.id == job_id)
        ).one_or_none()
        if row is None:
            raise JobNotFound(f"expected a job with id {job_id!r}, found none")
        detections = session.scalar(
            select(func.count())
            .select_from(DetectionRow)
            .join(Image, DetectionRow.image_id == Image.id)
            .where(Image.job_id == job_id)
        )

    return JobSummary(
        id=row.id,
        source=row.source,
        model=f"{row.name}/{row.version}",
        precision=row.precision,
        state=row.state,
        queued=row.queued,
        done=row.done,
        failed=row.failed,
        skipped=row.skipped,
        created_at=as_utc(row.created_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        detections=int(detections or 0),
    )
