"""Turning a source of images into a job and its batches on the task queue.

The producer sends tasks by name through a light Celery app object and never
imports the worker's task module, which would load OpenVINO.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from kombu.exceptions import OperationalError
from kombu.transport.redis import PRIORITY_STEPS
from rich.console import Console
from rich.progress import (
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from segbatch import defaults
from segbatch.config import Settings
from segbatch.errors import BrokerError
from segbatch.producer.backpressure import queue_depth, wait_for_room
from segbatch.producer.batching import chunked
from segbatch.producer.listing import iter_image_uris
from segbatch.producer.planning import (
    PlanCounts,
    SessionFactory,
    finished_once_drained,
    pending_batches,
    queue_batch,
)
from segbatch.schema import store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnqueueReport:
    """What one run of :func:`enqueue` did, in images (``batches`` in tasks)."""

    job_id: str
    listed: int
    queued: int
    skipped: int
    batches: int


def enqueue(
    source: str,
    *,
    settings: Settings,
    session_factory: SessionFactory,
    celery_app: Any,
    model_version_id: int,
    force: bool = False,
    progress: bool = True,
    check_content_type: bool = False,
    queue_name: str = defaults.QUEUE_NAME,
    poll_interval_s: float = defaults.QUEUE_POLL_INTERVAL_S,
    s3_client: Any | None = None,
    redis_client: Any | None = None,
) -> EnqueueReport:
    """List ``source``, record a job and send its images in batches to the queue.

    Images already done for ``model_version_id`` are skipped unless ``force``.
    Before each batch the producer waits while the queue holds more than
    ``settings.max_queued_batches`` messages; then the batch's images are
    recorded as queued and it is sent. A run stopped halfway leaves a job whose
    queued images were all sent, finished once they are done; running it again
    queues the rest.

    Args:
        source: ``s3://bucket/prefix``, a local folder, an image or a manifest.
        settings: batch size, back-pressure threshold and model name.
        session_factory: makes SQLAlchemy sessions on the results database.
        celery_app: any Celery app configured with the broker; only its
            ``send_task`` and configuration are used.
        model_version_id: the database id of the model version to run.
        force: queue images again even when they are already done.
        progress: draw a progress display on standard error.
        check_content_type: see :func:`~segbatch.producer.listing.iter_image_uris`.
        queue_name: the Celery queue the tasks go to.
        poll_interval_s: how often a waiting producer measures the queue.
        s3_client: S3 client for listing; made from the environment if needed.
        redis_client: client on the broker's Redis, for measuring the queue;
            made from the Celery app's broker URL when omitted.

    Raises:
        StorageError: the source cannot be listed.
        BrokerError: the broker cannot be reached. When that is so from the
            start, as when the source cannot be listed, no job is recorded.
    """
    uris = (
        info.uri
        for info in iter_image_uris(
            source, client=s3_client, check_content_type=check_content_type
        )
    )
    pages = chunked(uris, defaults.ENQUEUE_PAGE_SIZE)
    # The source is listed and the broker reached before the job exists, so that
    # a missing bucket, a typo in a path or a broker that is down leaves no job.
    first_page: list[str] = next(pages, [])

    own_redis = redis_client is None
    broker_redis: Any = redis_client
    if own_redis:
        broker_redis = redis.Redis.from_url(
            celery_app.conf.broker_url or settings.broker_url
        )
    sender = _BatchSender(
        celery_app=celery_app,
        redis_client=broker_redis,
        queue_name=queue_name,
        max_queued_batches=settings.max_queued_batches,
        poll_interval_s=poll_interval_s,
        model=settings.model,
    )
    counts = PlanCounts()
    try:
        sender.check_broker()
        with session_factory() as session:
            job_id = store.create_job(
                session, source=source, model_version_id=model_version_id
            )
        logger.info("Job %s: enqueuing images of %s", job_id, source)
        with finished_once_drained(session_factory, job_id):
            _send_batches(
                itertools.chain([first_page], pages),
                sender,
                session_factory=session_factory,
                job_id=job_id,
                model_version_id=model_version_id,
                batch_size=settings.batch_size,
                force=force,
                counts=counts,
                progress=progress,
            )
    finally:
        if own_redis:
            broker_redis.close()

    report = EnqueueReport(
        job_id=job_id,
        listed=counts.listed,
        queued=counts.queued,
        skipped=counts.skipped,
        batches=counts.batches,
    )
    logger.info(
        "Job %s: listed %d images, queued %d in %d batches, skipped %d already done",
        job_id,
        report.listed,
        report.queued,
        report.batches,
        report.skipped,
    )
    return report


def _send_batches(
    pages: Iterable[Sequence[str]],
    sender: _BatchSender,
    *,
    session_factory: SessionFactory,
    job_id: str,
    model_version_id: int,
    batch_size: int,
    force: bool,
    counts: PlanCounts,
    progress: bool,
) -> None:
    """Send the pending images of ``pages`` in batches, each once there is room."""
    batches = pending_batches(
        pages,
        session_factory=session_factory,
        job_id=job_id,
        model_version_id=model_version_id,
        batch_size=batch_size,
        force=force,
        counts=counts,
    )
    try:
        with _progress_display(progress) as display:
            task = display.add_task(f"job {job_id}", listed=0, queued=0, skipped=0)
            for batch in batches:
                # Room first: a batch is recorded as queued only when it can be
                # sent at once.
                sender.wait_for_room()
                queued = queue_batch(
                    session_factory,
                    job_id=job_id,
                    model_version_id=model_version_id,
                    batch=batch,
                    force=force,
                    counts=counts,
                )
                if queued:
                    sender.send(job_id, queued)
                _show(display, task, counts)
            _show(display, task, counts)
    except BaseException:
        _report_stop(job_id, counts)
        raise


@dataclass
class _BatchSender:
    """Sends batches by task name, once the queue has room for them."""

    celery_app: Any
    redis_client: Any
    queue_name: str
    max_queued_batches: int
    poll_interval_s: float
    model: str

    def __post_init__(self) -> None:
        options = self.celery_app.conf.broker_transport_options or {}
        self.priority_steps = options.get("priority_steps", PRIORITY_STEPS)
        self.key_prefix = options.get("global_keyprefix", "")

    def check_broker(self) -> None:
        """Raise ``BrokerError`` unless the queue can be measured."""
        queue_depth(
            self.redis_client,
            self.queue_name,
            priority_steps=self.priority_steps,
            key_prefix=self.key_prefix,
        )

    def wait_for_room(self) -> None:
        wait_for_room(
            self.redis_client,
            self.queue_name,
            self.max_queued_batches,
            self.poll_interval_s,
            priority_steps=self.priority_steps,
            key_prefix=self.key_prefix,
        )

    def send(self, job_id: str, uris: list[str]) -> None:
        try:
            self.celery_app.send_task(
                defaults.SEGMENT_TASK_NAME,
                args=[job_id, self.model, uris],
                queue=self.queue_name,
            )
        except OperationalError as exc:
            raise BrokerError(
                f"cannot send a batch of {len(uris)} images to queue "
                f"{self.queue_name!r}: {exc}"
            ) from exc

        logger.debug("Sent a batch of %d images to %r", len(uris), self.queue_name)


def _report_stop(job_id: str, counts: PlanCounts) -> None:
    """Say how far a stopped job got."""
    logger.warning(
        "Job %s stopped after queueing %d of the %d images listed so far; "
        "the same command queues the rest",
        job_id,
        counts.queued,
        counts.listed,
    )


def _progress_display(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn(
            "listed {task.fields[listed]}  queued {task.fields[queued]}  "
            "skipped {task.fields[skipped]}"
        ),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def _show(display: Progress, task: TaskID, counts: PlanCounts) -> None:
    display.update(
        task, listed=counts.listed, queued=counts.queued, skipped=counts.skipped
    )
