"""What each worker process holds: its model, its batch processor, its database.

Everything here is built inside the process that uses it, after any fork. OpenVINO
is not fork-safe, and neither are SQLAlchemy's pooled connections, so a process that
finds state built by another process id builds its own.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from segbatch.config import Settings, load_settings
from segbatch.models import registry
from segbatch.s3 import make_s3_client
from segbatch.schema import store
from segbatch.schema.db import make_engine, session_factory
from segbatch.workers.model import SegmentationModel
from segbatch.workers.pipeline import BatchProcessor

logger = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    pid: int
    model: registry.ModelVersion
    processor: BatchProcessor
    sessions: sessionmaker[Session] | None
    model_version_id: int | None


_runtime: WorkerRuntime | None = None


def load_processor(settings: Settings) -> tuple[registry.ModelVersion, BatchProcessor]:
    """Resolve, verify and compile the configured model; wrap it in a processor."""
    started = time.perf_counter()
    model_version = registry.resolve(settings.model, settings.models_dir)
    model = SegmentationModel.load(model_version)
    processor = BatchProcessor(model, settings, make_s3_client(settings))
    logger.info(
        "process %d ready with %s in %.1f s",
        os.getpid(),
        model_version.ref,
        time.perf_counter() - started,
    )
    return model_version, processor


def get_runtime(*, with_database: bool = True) -> WorkerRuntime:
    """This process's runtime, built on first use in this process."""
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        return _runtime

    settings = load_settings()
    model_version, processor = load_processor(settings)
    sessions = None
    model_version_id = None
    if with_database:
        sessions = session_factory(make_engine(settings.database_url))
        with sessions() as session:
            model_version_id = store.ensure_model_version(
                session, **registry.identity(model_version).__dict__
            )
    _runtime = WorkerRuntime(
        os.getpid(), model_version, processor, sessions, model_version_id
    )
    return _runtime
