"""Merging items into one array for the model and splitting its rows back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import BatchSizeMismatch, array_batch_function, split_rows, stack_items


def test_stack_and_split_are_inverse() -> None:
    items = [np.full(3, i, dtype=np.float32) for i in range(4)]
    stacked = stack_items(items)
    assert stacked.shape == (4, 3)
    for item, row in zip(items, split_rows(stacked, 4), strict=True):
        np.testing.assert_array_equal(item, row)


def test_split_checks_the_row_count() -> None:
    with pytest.raises(BatchSizeMismatch, match="returned 3 rows for 4 items"):
        split_rows(np.zeros((3, 2)), 4)


async def test_array_function_runs_in_the_executor() -> None:
    seen_threads: list[str] = []

    def double(rows: np.ndarray) -> np.ndarray:
        import threading

        seen_threads.append(threading.current_thread().name)
        return rows * 2

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer") as executor:
        run = array_batch_function(double, executor)
        out = await run([np.ones(2, dtype=np.float32), np.zeros(2, dtype=np.float32)])
    np.testing.assert_array_equal(np.stack(out), [[2, 2], [0, 0]])
    assert seen_threads[0].startswith("infer")
