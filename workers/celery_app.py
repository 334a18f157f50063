"""The Celery application: JSON only, late acknowledgement, one task prefetched.

Importing this module is cheap (no OpenVINO): the producer uses the same app to send
tasks by name. The worker side registers its task from ``segbatch.workers.tasks``.

Delivery is at least once: a task is acknowledged only after its results are
committed, and a task whose worker died is put back on the queue. The results
database makes that exactly once per image and model version.
"""

from __future__ import annotations

from celery import Celery

from segbatch import defaults
from segbatch.config import Settings, load_settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.broker_url``, configured for long batch tasks."""
    app = Celery("segbatch", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue=defaults.QUEUE_NAME,
        task_routes={defaults.SEGMENT_TASK_NAME: {"queue": defaults.QUEUE_NAME}},
        task_soft_time_limit=defaults.TASK_SOFT_TIME_LIMIT_S,
        task_time_limit=defaults.TASK_TIME_LIMIT_S,
        # A message not acknowledged within this time is delivered again, so it
        # must outlast the longest task.
        broker_transport_options={"visibility_timeout": defaults.VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )
    return app


app = make_celery(load_settings())
