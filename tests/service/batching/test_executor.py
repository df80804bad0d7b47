"""The batch function that runs a blocking model call in the model's executor thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.batching import threaded_batch_function


async def test_batch_function_runs_in_the_executor_and_keeps_the_order() -> None:
    seen_threads: list[str] = []

    def double(items: list[np.ndarray]) -> list[np.ndarray]:
        seen_threads.append(threading.current_thread().name)
        return [item * 2 for item in items]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer") as executor:
        run = threaded_batch_function(double, executor)
        out = await run([np.ones(2, dtype=np.float32), np.zeros(2, dtype=np.float32)])
    np.testing.assert_array_equal(np.stack(out), [[2, 2], [0, 0]])
    assert seen_threads[0].startswith("infer")
