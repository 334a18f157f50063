"""Cutting a stream of URIs into fixed-size batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items; the last one holds what remains.

    The input is consumed lazily, one batch at a time, so it may be endless.

    Raises:
        ValueError: ``size`` is below 1.
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return _batches(iter(items), size)


def _batches(iterator: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(islice(iterator, size)):
        yield batch


def unique_in_order(items: Iterable[T]) -> list[T]:
    """The items without repeats, each where it first appeared."""
    return list(dict.fromkeys(items))
