"""The results database: model versions, jobs, images and their detections.

The same models run on PostgreSQL (the distributed mode) and SQLite (the embedded
mode). An image is identified by its URI and the model version that segments it:
``images`` holds one row per such pair, whatever the number of jobs that queued it,
and ``detections`` holds the objects found by the latest run of that pair.

Pixel coordinates are in the image's displayed frame (after EXIF orientation), in
the original resolution. Times are UTC.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are derived, so that migrations and models name them alike.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")

# 64-bit keys for the tables that grow with the archive. SQLite only allocates
# keys for a column declared exactly INTEGER, which is 64-bit there anyway.
BigKey = BigInteger().with_variant(Integer(), "sqlite")

URI_SHA256_LENGTH: Final = 64  # hex digits
STATE_LENGTH: Final = 16


class ImageState:
    """Where an image stands for one model version."""

    QUEUED: Final = "queued"
    DONE: Final = "done"
    FAILED: Final = "failed"
    ALL: Final = (QUEUED, DONE, FAILED)


class JobState:
    RUNNING: Final = "running"
    FINISHED: Final = "finished"
    ALL: Final = (RUNNING, FINISHED)


def uri_sha256(uri: str) -> str:
    """The hex SHA-256 of a URI's UTF-8 bytes: the indexed stand-in for the URI.

    B-tree indexes refuse entries over about 2,700 bytes on PostgreSQL, and object
    keys may be longer, so uniqueness is enforced on this digest instead.
    """
    return hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ModelVersion(Base):
    """A compiled model: name, version and precision, pinned by its weights' digest."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", "precision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    precision: Mapped[str] = mapped_column(String(16))  # "int8", "fp16", "fp32"
    sha256: Mapped[str] = mapped_column(String(64))  # of the IR weights (.bin)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Job(Base):
    """One run of the producer over a source, with its images counted by outcome.

    ``queued`` counts the images the job put on the queue; ``done`` and ``failed``
    count those of its images whose latest outcome in this job is that state;
    ``skipped`` counts the images left out because they were already done.
    """

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(_one_of("state", JobState.ALL), name="state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    source: Mapped[str] = mapped_column(Text)  # s3:// prefix, folder or manifest
    model_version_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("model_versions.id")
    )
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    queued: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Image(Base):
    """One image URI under one model version, and the outcome of its latest run.

    ``uri`` holds the URI exactly as listed; ``uri_sha256`` is its digest, the
    unique key together with the model version. ``job_id`` names the job that
    queued the image last. ``timings_ms`` maps a step (fetch, decode, infer,
    post) to its duration in milliseconds.
    """

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("uri_sha256", "model_version_id"),
        CheckConstraint(_one_of("state", ImageState.ALL), name="state"),
        Index(None, "job_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigKey, primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    uri_sha256: Mapped[str] = mapped_column(String(URI_SHA256_LENGTH))
    model_version_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("model_versions.id")
    )
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id"))
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    etag: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)  # displayed, in pixels
    height: Mapped[int | None] = mapped_column(Integer)  # displayed, in pixels
    failure_kind: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    timings_ms: Mapped[dict[str, float] | None] = mapped_column(JSONDocument)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DetectionRow(Base):
    """One object found in an image.

    The box ``x1, y1, x2, y2`` and the polygons are in displayed pixels. ``polygons``
    is a list of rings ``{"hole": bool, "xy": [[x, y], ...]}``: each outer ring is
    followed by the holes it encloses. ``mask_area`` is the mask's area in pixels.
    """

    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(BigKey, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    class_id: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Double)
    x1: Mapped[float] = mapped_column(Double)
    y1: Mapped[float] = mapped_column(Double)
    x2: Mapped[float] = mapped_column(Double)
    y2: Mapped[float] = mapped_column(Double)
    polygons: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    mask_area: Mapped[int] = mapped_column(BigInteger)
