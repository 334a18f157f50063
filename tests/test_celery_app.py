"""The Celery app is configured for long, at-least-once batch tasks."""

from __future__ import annotations

import subprocess
import sys

from segbatch import defaults
from segbatch.config import Settings
from segbatch.workers.celery_app import make_celery


def test_messages_are_json_only_acknowledged_late_and_prefetched_one_at_a_time():
    conf = make_celery(Settings(broker_url="redis://127.0.0.1:6379/15")).conf

    assert conf.task_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_routes[defaults.SEGMENT_TASK_NAME]["queue"] == defaults.QUEUE_NAME


def test_an_unacknowledged_task_is_redelivered_only_after_the_longest_task_ends():
    conf = make_celery(Settings()).conf

    visibility_timeout_s = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility_timeout_s


def test_the_producer_side_of_the_app_loads_no_openvino():
    probe = (
        "import sys; import segbatch.workers.celery_app;"
        "import segbatch.producer.enqueue;"
        "print('openvino' in sys.modules)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "False"


def test_waiting_out_a_store_and_a_database_outage_fits_in_the_soft_time_limit():
    conf = make_celery(Settings()).conf

    waits_s = defaults.STORAGE_WAIT_S + defaults.DATABASE_WAIT_S
    assert waits_s + defaults.LONGEST_RETRY_PAUSE_S < conf.task_soft_time_limit
