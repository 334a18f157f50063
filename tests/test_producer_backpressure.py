"""The producer's wait for room on the broker queue, against the real Redis."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from segbatch.errors import BrokerError
from segbatch.producer.backpressure import queue_depth, queue_key_names, wait_for_room


def publish(
    producer_broker_url: str,
    queue_name: str,
    priorities: list[int],
    transport_options: dict,
) -> None:
    """Send one message per priority the way the producer does, through Celery."""
    app = Celery("segbatch-backpressure-test", broker=producer_broker_url)
    app.conf.broker_transport_options = transport_options
    try:
        for priority in priorities:
            app.send_task(
                "segbatch.test_only",
                args=[priority],
                queue=queue_name,
                priority=priority,
            )
    finally:
        app.close()


@pytest.mark.parametrize(
    "transport_options",
    [{}, {"global_keyprefix": "segbatch-prefix:"}, {"priority_steps": list(range(10))}],
    ids=["default", "key-prefix", "ten-priorities"],
)
def test_the_depth_counts_messages_of_every_priority(
    producer_broker_url, broker_queue, transport_options
):
    client, queue_name = broker_queue
    priorities = [0, 0, 1, 3, 5, 5, 7, 9]
    prefix = transport_options.get("global_keyprefix", "")
    keys = queue_key_names(
        queue_name,
        priority_steps=transport_options.get("priority_steps", [0, 3, 6, 9]),
        key_prefix=prefix,
    )

    try:
        publish(producer_broker_url, queue_name, priorities, transport_options)
        depth = queue_depth(
            client,
            queue_name,
            priority_steps=transport_options.get("priority_steps", [0, 3, 6, 9]),
            key_prefix=prefix,
        )
        stored_lists = [
            key.decode()
            for key in client.keys(f"{prefix}{queue_name}*")
            if client.type(key) == b"list"
        ]
    finally:
        client.delete(*keys, f"{prefix}_kombu.binding.{queue_name}")

    assert depth == len(priorities)
    assert len(stored_lists) > 1
    assert set(stored_lists) <= set(keys)


def test_there_is_room_at_once_when_the_queue_is_short(broker_queue):
    client, queue_name = broker_queue
    client.rpush(queue_name, *[b"message"] * 3)

    waited_s = wait_for_room(client, queue_name, 3, 0.01)

    assert waited_s == 0.0


def test_the_wait_lasts_while_the_queue_is_long_and_ends_when_it_drains(broker_queue):
    client, queue_name = broker_queue
    client.rpush(queue_name, *[b"message"] * 10)
    client.rpush(queue_name + "\x06\x163", *[b"message"] * 2)
    popped: list[bytes] = []

    def worker() -> None:
        time.sleep(0.1)
        while client.llen(queue_name) > 0:
            popped.append(client.lpop(queue_name))
            time.sleep(0.02)

    drainer = threading.Thread(target=worker)
    drainer.start()
    waited_s = wait_for_room(client, queue_name, 4, 0.01, timeout_s=20)
    depth_at_return = queue_depth(client, queue_name)
    drainer.join()

    assert waited_s >= 0.1
    assert depth_at_return <= 4
    assert len(popped) >= 12 - 4 - 2


def test_the_wait_gives_up_after_its_timeout(broker_queue):
    client, queue_name = broker_queue
    client.rpush(queue_name, *[b"message"] * 5)

    started_s = time.monotonic()
    with pytest.raises(BrokerError, match="still holds 5 batches, more than 2"):
        wait_for_room(client, queue_name, 2, 0.05, timeout_s=0.3)

    assert 0.3 <= time.monotonic() - started_s < 3


def test_an_unreachable_broker_is_a_broker_error_naming_it():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        db=5,
        password="secret",
        retry=Retry(NoBackoff(), 0),
    )

    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}/5") as caught:
        wait_for_room(client, "segbatch", 1, 0.01)

    assert "secret" not in str(caught.value)
