"""Merging and splitting for the batcher: per-item arrays in, one stacked array through a model."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np

from service.batching.batcher import BatchFunction
from service.batching.errors import BatchSizeMismatch

ArrayFunction = Callable[[np.ndarray], np.ndarray]
InT = TypeVar("InT")
OutT = TypeVar("OutT")


def stack_items(items: Sequence[np.ndarray]) -> np.ndarray:
    """Items of equal shape -> one array with a leading batch axis."""
    return np.stack(items, axis=0)


def split_rows(batch: np.ndarray, expected_rows: int) -> list[np.ndarray]:
    """One array with a leading batch axis -> its rows, checked against the item count."""
    if batch.ndim == 0 or batch.shape[0] != expected_rows:
        raise BatchSizeMismatch(
            f"model returned {batch.shape[0] if batch.ndim else 0} rows for {expected_rows} items"
        )
    return list(batch)


def array_batch_function(
    run_rows: ArrayFunction, executor: Executor | None = None
) -> BatchFunction[np.ndarray, np.ndarray]:
    """Wrap a blocking `rows -> rows` function so the batcher can call it off the event loop."""

    async def run(items: list[np.ndarray]) -> list[np.ndarray]:
        stacked = stack_items(items)
        result = await asyncio.get_running_loop().run_in_executor(executor, run_rows, stacked)
        return split_rows(result, len(items))

    return run


def threaded_batch_function(
    run_items: Callable[[list[InT]], list[OutT]], executor: Executor | None = None
) -> BatchFunction[InT, OutT]:
    """Wrap a blocking `items -> results` function so the batcher calls it off the event loop
    (the batcher checks that it returns one result per item)."""

    async def run(items: list[InT]) -> list[OutT]:
        return await asyncio.get_running_loop().run_in_executor(executor, run_items, items)

    return run
