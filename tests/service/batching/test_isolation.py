"""Failure isolation: a failed batch is retried item by item; only failing items fail."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.batching.isolation import ItemFailed, isolate_failures


class Poisoned(Exception):
    pass


def doubling_unless_negative(calls: list[list[int]]) -> Callable[[list[int]], list[int]]:
    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if any(item < 0 for item in items):
            raise Poisoned(f"negative item in {items}")
        return [item * 2 for item in items]

    return run


def test_a_healthy_batch_runs_once() -> None:
    calls: list[list[int]] = []
    run = isolate_failures(doubling_unless_negative(calls))
    assert run([1, 2, 3]) == [2, 4, 6]
    assert calls == [[1, 2, 3]]


def test_a_poisoned_item_fails_alone_and_its_neighbours_succeed() -> None:
    calls: list[list[int]] = []
    run = isolate_failures(doubling_unless_negative(calls))
    results = run([1, -1, 3])
    assert results[0] == 2 and results[2] == 6
    failed = results[1]
    assert isinstance(failed, ItemFailed) and isinstance(failed.error, Poisoned)
    assert calls == [[1, -1, 3], [1], [-1], [3]]


def test_a_single_item_batch_raises_as_before() -> None:
    run = isolate_failures(doubling_unless_negative([]))
    with pytest.raises(Poisoned):
        run([-1])


def test_a_wrong_result_count_on_retry_is_that_items_failure() -> None:
    def broken(items: list[int]) -> list[int]:
        if len(items) > 1:
            raise RuntimeError("batch failed")
        return []

    results = isolate_failures(broken)([1, 2])
    assert all(isinstance(result, ItemFailed) for result in results)
