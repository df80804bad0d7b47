"""The model side of the batcher: a blocking batch function run off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from service.batching.batcher import BatchFunction

InT = TypeVar("InT")
OutT = TypeVar("OutT")


def threaded_batch_function(
    run_items: Callable[[list[InT]], list[OutT]], executor: Executor | None = None
) -> BatchFunction[InT, OutT]:
    """Wrap a blocking `items -> results` function so the batcher calls it off the event loop
    (the batcher checks that it returns one result per item)."""

    async def run(items: list[InT]) -> list[OutT]:
        return await asyncio.get_running_loop().run_in_executor(executor, run_items, items)

    return run
