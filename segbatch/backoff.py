"""Pauses between tries of something that may work again soon."""

from __future__ import annotations

import time
from collections.abc import Iterator


def pauses(wait_s: float, first_s: float, longest_s: float) -> Iterator[float]:
    """Pause lengths: ``first_s``, then twice the last up to ``longest_s``.

    The pauses end ``wait_s`` seconds after the first one is asked for: the last
    is cut short to fit, and none follows.
    """
    deadline_s = time.monotonic() + wait_s
    pause_s = first_s
    while (left_s := deadline_s - time.monotonic()) > 0:
        yield min(pause_s, left_s)
        pause_s = min(pause_s * 2, longest_s)
