"""Holding the producer back while the broker queue is full.

Celery's Redis transport (kombu) keeps a queue as Redis lists: one named after the
queue for priority 0 and one per further priority step, named
``<queue>\\x06\\x16<step>``; every key also carries the transport's
``global_keyprefix``, empty by default. A queue's depth is the sum of their
lengths. Messages a worker has taken but not yet acknowledged are not counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from kombu.transport.redis import PRIORITY_STEPS, Channel
from redis.exceptions import RedisError

from segbatch.errors import BrokerError

logger = logging.getLogger(__name__)


def queue_key_names(
    queue_name: str,
    *,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    key_prefix: str = "",
) -> list[str]:
    """The Redis keys holding the messages of ``queue_name``, one per priority."""
    names = [
        f"{key_prefix}{queue_name}{Channel.sep}{step}"
        if step
        else key_prefix + queue_name
        for step in sorted(set(priority_steps))
    ]
    return list(dict.fromkeys(names))


def queue_depth(
    redis_client: Any,
    queue_name: str,
    *,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    key_prefix: str = "",
) -> int:
    """How many messages wait in ``queue_name``, over all priorities.

    Raises:
        BrokerError: Redis cannot be reached or answers with an error.
    """
    keys = queue_key_names(
        queue_name, priority_steps=priority_steps, key_prefix=key_prefix
    )
    try:
        with redis_client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
            lengths = pipe.execute()
    except RedisError as exc:
        raise BrokerError(
            f"cannot measure queue {queue_name!r} on {_describe(redis_client)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return sum(int(length) for length in lengths)


def wait_for_room(
    redis_client: Any,
    queue_name: str,
    max_batches: int,
    poll_interval_s: float,
    *,
    timeout_s: float | None = None,
    priority_steps: Sequence[int] = PRIORITY_STEPS,
    key_prefix: str = "",
) -> float:
    """Block while ``queue_name`` holds more than ``max_batches`` messages.

    Returns:
        The seconds spent waiting (0.0 when there was room at once).

    Raises:
        BrokerError: Redis fails, or the queue is still too long after
            ``timeout_s`` seconds (``None`` waits for as long as it takes).
    """
    started_s = time.monotonic()
    depth = queue_depth(
        redis_client, queue_name, priority_steps=priority_steps, key_prefix=key_prefix
    )
    if depth <= max_batches:
        return 0.0

    logger.info(
        "Queue %r holds %d batches, more than %d: waiting for workers",
        queue_name,
        depth,
        max_batches,
    )
    while depth > max_batches:
        waited_s = time.monotonic() - started_s
        if timeout_s is not None and waited_s >= timeout_s:
            raise BrokerError(
                f"queue {queue_name!r} still holds {depth} batches, more than "
                f"{max_batches}, after waiting {waited_s:.1f} s"
            )
        pause_s = poll_interval_s
        if timeout_s is not None:
            pause_s = min(pause_s, timeout_s - waited_s)
        time.sleep(pause_s)
        depth = queue_depth(
            redis_client,
            queue_name,
            priority_steps=priority_steps,
            key_prefix=key_prefix,
        )
        logger.debug("Queue %r holds %d batches", queue_name, depth)

    waited_s = time.monotonic() - started_s
    logger.info("Queue %r has room again after %.1f s", queue_name, waited_s)
    return waited_s


def _describe(redis_client: Any) -> str:
    """``redis host:port/db`` of a client, without any password."""
    try:
        kwargs = redis_client.connection_pool.connection_kwargs
    except AttributeError:
        return "redis"
    if "path" in kwargs:
        return f"redis {kwargs['path']}/{kwargs.get('db', 0)}"
    return f"redis {kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
