"""Cutting listed URIs into batches."""

from __future__ import annotations

import itertools

import pytest

from segbatch.producer.batching import chunked, unique_in_order


@pytest.mark.parametrize(
    ("count", "size", "expected_lengths"),
    [
        (0, 3, []),
        (1, 3, [1]),
        (3, 3, [3]),
        (4, 3, [3, 1]),
        (7, 1, [1] * 7),
        (5, 100, [5]),
        (32, 16, [16, 16]),
    ],
)
def test_batches_are_full_except_the_last(count, size, expected_lengths):
    items = [f"s3://b/{index}.jpg" for index in range(count)]

    batches = list(chunked(items, size))

    assert [len(batch) for batch in batches] == expected_lengths
    assert list(itertools.chain.from_iterable(batches)) == items


def test_an_endless_stream_is_cut_lazily():
    batches = chunked(itertools.count(), 4)

    assert next(batches) == [0, 1, 2, 3]
    assert next(batches) == [4, 5, 6, 7]


@pytest.mark.parametrize("size", [0, -1])
def test_a_batch_size_below_one_is_refused_at_once(size):
    with pytest.raises(ValueError, match=f"at least 1, got {size}"):
        chunked(["a"], size)


def test_repeats_are_dropped_keeping_first_positions():
    assert unique_in_order(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
