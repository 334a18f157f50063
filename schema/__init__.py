"""The results database: tables, migrations and exactly-once bookkeeping."""

from segbatch.schema.db import make_engine, session_factory, upgrade
from segbatch.schema.store import (
    JobSummary,
    RecordedCounts,
    add_skipped,
    create_job,
    ensure_model_version,
    finish_if_drained,
    job_summary,
    mark_queued,
    model_version_of_job,
    record_results,
    select_pending,
)
from segbatch.schema.tables import (
    Base,
    DetectionRow,
    Image,
    ImageState,
    Job,
    JobState,
    ModelVersion,
    uri_sha256,
)

__all__ = [
    "Base",
    "DetectionRow",
    "Image",
    "ImageState",
    "Job",
    "JobState",
    "JobSummary",
    "ModelVersion",
    "RecordedCounts",
    "add_skipped",
    "create_job",
    "ensure_model_version",
    "finish_if_drained",
    "job_summary",
    "make_engine",
    "mark_queued",
    "model_version_of_job",
    "record_results",
    "select_pending",
    "session_factory",
    "upgrade",
    "uri_sha256",
]
