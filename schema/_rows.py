"""The machinery under ``store``: transactions, locked image rows, job counters.

Every change to an image row follows one order, which keeps concurrent writers
from deadlocking on PostgreSQL: the image rows are created if missing and locked in
ascending ``uri_sha256``, then the jobs' rows are updated in ascending id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from segbatch.errors import DatabaseError, DatabaseUnavailable
from segbatch.schema.tables import Image, ImageState, Job, JobState, uri_sha256

_URIS_NAMED_IN_ERRORS: Final = 3

# SQLITE_BUSY and SQLITE_LOCKED, the primary result codes of a database that
# another connection holds.
_SQLITE_BUSY_CODES: Final = frozenset({5, 6})

# The image states a job counts, each in the column of the same name.
_COUNTED_STATES: Final = (ImageState.DONE, ImageState.FAILED)


@contextmanager
def transaction(session: Session, failure: str) -> Iterator[None]:
    """Commit what the block did, or roll it back and raise ``DatabaseError``.

    ``failure`` says what was being done; the database's reason is appended. A
    failure that may pass (see :func:`_is_transient`) is ``DatabaseUnavailable``.
    """
    try:
        yield
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        error = DatabaseUnavailable if _is_transient(exc) else DatabaseError
        raise error(f"{failure}: {database_reason(exc)}") from exc
    except BaseException:
        session.rollback()
        raise


def name_uris(uris: Sequence[str]) -> str:
    """A short list of URIs for an error message."""
    named = ", ".join(repr(uri) for uri in uris[:_URIS_NAMED_IN_ERRORS])
    more = len(uris) - _URIS_NAMED_IN_ERRORS
    return f"{named} and {more} more" if more > 0 else named


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; SQLite returns timestamps without a zone, written in UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def dialect_insert(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``ON CONFLICT`` on the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(entity)
    if dialect == "sqlite":
        return sqlite.insert(entity)
    raise DatabaseError(f"expected a PostgreSQL or SQLite database, got {dialect}")


@dataclass(frozen=True)
class LockedImage:
    """An image row as it stood once locked, before this transaction changed it."""

    id: int
    uri: str
    state: str
    job_id: str
    attempts: int
    inserted: bool  # created by this transaction


def lock_images(
    session: Session, *, job_id: str, model_version_id: int, uris: Sequence[str]
) -> list[LockedImage]:
    """Lock the rows of ``uris``, creating missing ones as queued for ``job_id``.

    Returns one row per distinct URI, in ascending ``uri_sha256``. Once locked, no
    other transaction can change the rows until this one ends, and the states
    read are the latest committed ones.
    """
    uris_by_digest = {uri_sha256(uri): uri for uri in uris}
    digests = sorted(uris_by_digest)
    if not digests:
        return []

    new_rows = [
        {
            "uri": uris_by_digest[digest],
            "uri_sha256": digest,
            "model_version_id": model_version_id,
            "job_id": job_id,
            "state": ImageState.QUEUED,
            "attempts": 0,
            "queued_at": now_utc(),
        }
        for digest in digests
    ]
    insert_missing = (
        dialect_insert(session, Image)
        .on_conflict_do_nothing(index_elements=["uri_sha256", "model_version_id"])
        .returning(Image.uri_sha256)
    )
    inserted = set(session.scalars(insert_missing, new_rows))

    locked = session.execute(
        select(Image.id, Image.uri_sha256, Image.state, Image.job_id, Image.attempts)
        .where(
            Image.model_version_id == model_version_id,
            Image.uri_sha256.in_(digests),
        )
        .order_by(Image.uri_sha256)
        .with_for_update()
    )
    return [
        LockedImage(
            id=row.id,
            uri=uris_by_digest[row.uri_sha256],
            state=row.state,
            job_id=row.job_id,
            attempts=row.attempts,
            inserted=row.uri_sha256 in inserted,
        )
        for row in locked
    ]


class JobDeltas:
    """Changes to the jobs' counters, gathered before they are written."""

    def __init__(self) -> None:
        self._changes: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def queue(self, job_id: str) -> None:
        """Count one more image queued by ``job_id``."""
        self._changes[job_id]["queued"] += 1

    def move(self, job_id: str, old_state: str, new_state: str) -> None:
        """Count an image of ``job_id`` under ``new_state`` instead of ``old_state``."""
        if old_state == new_state:
            return
        if old_state in _COUNTED_STATES:
            self._changes[job_id][old_state] -= 1
        if new_state in _COUNTED_STATES:
            self._changes[job_id][new_state] += 1

    def write(self, session: Session, *, reopen: str | None = None) -> None:
        """Apply the changes; ``reopen`` names a job set back to running."""
        job_ids = set(self._changes) | ({reopen} if reopen else set())
        for job_id in sorted(job_ids):
            values: dict[str, Any] = {
                counter: Job.__table__.c[counter] + change
                for counter, change in self._changes[job_id].items()
                if change != 0
            }
            if job_id == reopen:
                values.update(state=JobState.RUNNING, finished_at=None)
            if values:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(values)
                    .execution_options(synchronize_session=False)
                )


def finish_drained_jobs(session: Session, job_ids: set[str]) -> None:
    """Mark finished those of ``job_ids`` still running with no image queued.

    Runs after the jobs' counters were written, as its own statement: the row
    locks taken then make it see every transaction that finished an image of
    these jobs before this one.
    """
    if not job_ids:
        return

    queued_image = exists().where(
        Image.job_id == Job.id, Image.state == ImageState.QUEUED
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(sorted(job_ids)))
        .where(Job.state == JobState.RUNNING, ~queued_image)
        .values(state=JobState.FINISHED, finished_at=now_utc())
        .execution_options(synchronize_session=False)
    )


def _is_transient(exc: SQLAlchemyError) -> bool:
    """Whether the same transaction may succeed later.

    Lost and refused connections, a server shutting down, deadlocks, lock
    timeouts and serialisation failures are DB-API ``OperationalError`` on
    PostgreSQL. SQLite raises that class for a missing table too, so there only
    a busy or locked database counts.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    return sqlite_code is None or sqlite_code & 0xFF in _SQLITE_BUSY_CODES


def database_reason(exc: SQLAlchemyError) -> str:
    """The first line of what the database (or its driver) said."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
