"""Scheduling behaviour of the dynamic batcher, timed by events rather than sleeps.

The batch functions run in the batcher's scheduling thread, so the gates that hold them are
threading events; the tests wait for them without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import (
    BatcherClosed,
    BatchSizeMismatch,
    DeadlineExceeded,
    DynamicBatcher,
    QueueFull,
)

LONG_DELAY_S = 60.0  # a delay no test waits for: a batch that runs did not wait on it
PATIENCE_S = 5.0  # upper bound for things that should happen "at once"
SHORT_DELAY_S = 0.01  # for tests where a partial batch must flush soon
GATE_TIMEOUT_S = 2 * PATIENCE_S  # a gate never opened lets its thread go after this


class Gated:
    """A batch stage that records its batches and can be held busy with a gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        self.error: Exception | None = None
        self.threads: list[str] = []

    def enter(self, items: list[int]) -> None:
        """Record the batch, wait at the gate if one is set, raise the error if one is set."""
        self.batches.append(list(items))
        self.threads.append(threading.current_thread().name)
        self.started.set()
        gate = self.gate
        if gate is not None:
            gate.wait(GATE_TIMEOUT_S)
        if self.error is not None:
            raise self.error

    def hold(self) -> threading.Event:
        self.gate = threading.Event()
        self.started.clear()
        return self.gate

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, PATIENCE_S), "the stage never ran"


class Model(Gated):
    """The batch function: ten times each item."""

    def __call__(self, items: list[int]) -> list[int]:
        self.enter(items)
        return [item * 10 for item in items]


class QueueWatch:
    """Batch observer that records what the batcher reports (from either thread)."""

    def __init__(self) -> None:
        self.depth = 0
        self.batch_sizes: list[int] = []

    def queue_depth(self, images: int) -> None:
        self.depth = images

    def batch_started(self, queue_waits_s: list[float]) -> None:
        self.batch_sizes.append(len(queue_waits_s))


WATCHES: dict[int, QueueWatch] = {}


def make(model: Model, **overrides: float) -> DynamicBatcher[int, int]:
    options = {"max_batch_size": 4, "max_batch_delay_s": LONG_DELAY_S, "max_queue_size": 16}
    options.update(overrides)
    watch = QueueWatch()
    batcher = DynamicBatcher(
        model,
        max_batch_size=int(options["max_batch_size"]),
        max_batch_delay_s=options["max_batch_delay_s"],
        max_queue_size=int(options["max_queue_size"]),
        observer=watch,
        name="test",
    )
    WATCHES[id(batcher)] = watch
    return batcher


async def occupy(
    batcher: DynamicBatcher[int, int], model: Model
) -> tuple[threading.Event, asyncio.Task[list[int]]]:
    """Start a request that keeps the runtime busy until the returned gate is set."""
    gate = model.hold()
    busy = asyncio.create_task(batcher.submit([0]))
    await model.wait_started()
    return gate, busy


async def wait_queued(batcher: DynamicBatcher[int, int], items: int) -> None:
    for _ in range(int(PATIENCE_S / 0.002)):
        if batcher.queued_items == items:
            break
        await asyncio.sleep(0.002)
    assert batcher.queued_items == items
    assert WATCHES[id(batcher)].depth == items


async def wait_healthy(batcher: DynamicBatcher[int, int]) -> None:
    """Wait for a restarted scheduler."""
    for _ in range(int(PATIENCE_S / 0.01)):
        if batcher.healthy:
            break
        await asyncio.sleep(0.01)
    assert batcher.healthy


async def test_lone_request_runs_at_once_without_the_delay() -> None:
    model = Model()
    batcher = make(model)
    result = await asyncio.wait_for(batcher.submit([3]), PATIENCE_S)
    assert result == [30]
    assert model.batches == [[3]]
    await batcher.close()


async def test_batch_runs_when_full() -> None:
    model = Model()
    batcher = make(model, max_batch_size=4)
    gate, busy = await occupy(batcher, model)
    waiters = [asyncio.create_task(batcher.submit([i])) for i in range(1, 5)]
    await wait_queued(batcher, 4)
    model.gate = None
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(busy, *waiters), PATIENCE_S)
    assert results == [[0], [10], [20], [30], [40]]
    assert model.batches == [[0], [1, 2, 3, 4]]
    assert WATCHES[id(batcher)].batch_sizes == [1, 4]
    await batcher.close()


async def test_partial_batch_flushes_after_the_delay() -> None:
    delay_s = 0.05
    model = Model()
    batcher = make(model, max_batch_size=8, max_batch_delay_s=delay_s)
    gate, busy = await occupy(batcher, model)
    queued_at = time.monotonic()
    waiters = [asyncio.create_task(batcher.submit([i])) for i in (1, 2)]
    await wait_queued(batcher, 2)
    model.gate = None
    gate.set()
    await busy
    assert await asyncio.wait_for(asyncio.gather(*waiters), PATIENCE_S) == [[10], [20]]
    assert time.monotonic() - queued_at >= delay_s
    assert model.batches == [[0], [1, 2]]
    await batcher.close()


async def test_request_larger_than_a_batch_is_split_across_runs_in_order() -> None:
    model = Model()
    batcher = make(model, max_batch_size=4)
    result = await asyncio.wait_for(batcher.submit(list(range(10))), PATIENCE_S)
    assert result == [i * 10 for i in range(10)]
    assert [len(batch) for batch in model.batches] == [4, 4, 2]
    await batcher.close()


async def test_items_of_several_requests_share_a_batch() -> None:
    model = Model()
    batcher = make(model, max_batch_size=4, max_batch_delay_s=SHORT_DELAY_S)
    gate, busy = await occupy(batcher, model)
    first = asyncio.create_task(batcher.submit([1, 2, 3]))
    second = asyncio.create_task(batcher.submit([4, 5, 6]))
    await wait_queued(batcher, 6)
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(first, PATIENCE_S) == [10, 20, 30]
    assert await asyncio.wait_for(second, PATIENCE_S) == [40, 50, 60]
    await busy
    assert model.batches[1:] == [[1, 2, 3, 4], [5, 6]]
    await batcher.close()


async def test_expired_request_fails_and_never_reaches_the_model() -> None:
    model = Model()
    batcher = make(model)
    gate, busy = await occupy(batcher, model)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit([7], timeout_s=0.01)
    assert batcher.queued_items == 0
    model.gate = None
    gate.set()
    await busy
    await batcher.close()
    assert [7] not in model.batches
    assert all(7 not in batch for batch in model.batches)


async def test_cancelled_request_is_dropped_before_compute() -> None:
    model = Model()
    batcher = make(model, max_batch_delay_s=SHORT_DELAY_S)
    gate, busy = await occupy(batcher, model)
    doomed = asyncio.create_task(batcher.submit([5, 6]))
    survivor = asyncio.create_task(batcher.submit([8]))
    await wait_queued(batcher, 3)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued_items == 1
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(survivor, PATIENCE_S) == [80]
    await busy
    assert model.batches == [[0], [8]]
    await batcher.close()


async def test_lone_request_after_a_cancelled_one_still_runs_at_once() -> None:
    model = Model()
    batcher = make(model)
    gate, busy = await occupy(batcher, model)
    doomed = asyncio.create_task(batcher.submit([5]))
    await wait_queued(batcher, 1)
    doomed.cancel()
    model.gate = None
    gate.set()
    await busy
    # The cancelled request may linger in the deque, but the queue counts as empty.
    assert await asyncio.wait_for(batcher.submit([6]), PATIENCE_S) == [60]
    assert model.batches == [[0], [6]]
    await batcher.close()


async def test_batch_error_reaches_every_waiter_of_the_batch() -> None:
    model = Model()
    batcher = make(model, max_batch_delay_s=SHORT_DELAY_S)
    gate, busy = await occupy(batcher, model)
    waiters = [asyncio.create_task(batcher.submit([i])) for i in (1, 2, 3)]
    await wait_queued(batcher, 3)
    model.error = RuntimeError("model exploded")
    gate.set()
    outcomes = await asyncio.wait_for(
        asyncio.gather(busy, *waiters, return_exceptions=True), PATIENCE_S
    )
    assert len(model.batches) == 2
    assert all(isinstance(o, RuntimeError) and str(o) == "model exploded" for o in outcomes)
    # The batcher keeps serving after a failed batch.
    model.error = None
    model.gate = None
    assert await asyncio.wait_for(batcher.submit([4]), PATIENCE_S) == [40]
    await batcher.close()


async def test_wrong_result_count_fails_the_batch() -> None:
    def broken(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = DynamicBatcher(broken, max_batch_size=4, max_batch_delay_s=0, max_queue_size=8)
    with pytest.raises(BatchSizeMismatch, match="returned 1 results for 2 items"):
        await asyncio.wait_for(batcher.submit([1, 2]), PATIENCE_S)
    await batcher.close()


async def test_full_queue_rejects_at_once_and_queues_nothing() -> None:
    model = Model()
    batcher = make(model, max_queue_size=3, max_batch_delay_s=SHORT_DELAY_S)
    gate, busy = await occupy(batcher, model)
    waiter = asyncio.create_task(batcher.submit([1, 2]))
    await wait_queued(batcher, 2)
    with pytest.raises(QueueFull, match="no room for 2 more"):
        await batcher.submit([3, 4])
    assert batcher.queued_items == 2
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(waiter, PATIENCE_S) == [10, 20]
    await busy
    await batcher.close()


async def test_close_drains_queued_work_then_refuses_new_work() -> None:
    model = Model()
    batcher = make(model)
    gate, busy = await occupy(batcher, model)
    waiter = asyncio.create_task(batcher.submit([1, 2]))
    await wait_queued(batcher, 2)
    closing = asyncio.create_task(batcher.close(grace_s=PATIENCE_S))
    await asyncio.sleep(0)
    with pytest.raises(BatcherClosed):
        await batcher.submit([9])
    model.gate = None
    gate.set()
    await asyncio.wait_for(closing, PATIENCE_S)
    assert await busy == [0]
    assert await waiter == [10, 20]


async def test_close_fails_what_the_grace_period_could_not_finish() -> None:
    model = Model()
    batcher = make(model)
    _gate, busy = await occupy(batcher, model)  # never released
    waiter = asyncio.create_task(batcher.submit([1]))
    await wait_queued(batcher, 1)
    await asyncio.wait_for(batcher.close(grace_s=0.01), PATIENCE_S)
    with pytest.raises(BatcherClosed):
        await busy
    with pytest.raises(BatcherClosed):
        await waiter


async def test_empty_request_needs_no_batch() -> None:
    model = Model()
    batcher = make(model)
    assert await batcher.submit([]) == []
    assert model.batches == []
    await batcher.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_batch_size", 0),
        ("max_batch_delay_s", -1.0),
        ("max_queue_size", 0),
        ("max_finishing_batches", 0),
    ],
)
def test_bad_configuration_fails_naming_the_value(option: str, value: float) -> None:
    options: dict[str, float] = {
        "max_batch_size": 4,
        "max_batch_delay_s": 0,
        "max_queue_size": 4,
        "max_finishing_batches": 1,
    }
    options[option] = value
    with pytest.raises(ValueError, match=f"{option} must be .*got {value}"):
        DynamicBatcher(
            Model(),
            max_batch_size=int(options["max_batch_size"]),
            max_batch_delay_s=options["max_batch_delay_s"],
            max_queue_size=int(options["max_queue_size"]),
            max_finishing_batches=int(options["max_finishing_batches"]),
        )


async def test_a_failed_scheduler_fails_its_waiters_at_once_and_is_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from service.batching import SchedulerFailed, SchedulerRestarting

    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=2,  # [2, 3] fills a batch: the scheduler takes it as soon as it can
        max_batch_delay_s=LONG_DELAY_S,
        max_queue_size=16,
        restart_delay_s=0.05,
    )
    gate = model.hold()
    first = asyncio.create_task(batcher.submit([1]))
    await model.wait_started()  # the runtime is busy with [1]
    waiting = asyncio.create_task(batcher.submit([2, 3], timeout_s=LONG_DELAY_S))
    await asyncio.sleep(0)

    def broken_take(limit: int) -> list[object]:
        raise RuntimeError("scheduler bug")

    batcher._take = broken_take  # type: ignore[method-assign,assignment]
    gate.set()  # the slot frees, the scheduler takes the next batch and fails
    started = time.monotonic()
    with pytest.raises(SchedulerFailed, match="scheduler bug"):
        await asyncio.wait_for(waiting, PATIENCE_S)
    assert time.monotonic() - started < PATIENCE_S  # at once, not at the request's deadline
    assert await first == [10]  # the batch that was running finished normally
    assert not batcher.healthy and batcher.scheduler_failures == 1
    assert "the batch scheduler failed" in caplog.text
    with pytest.raises(SchedulerRestarting):
        await batcher.submit([4])
    del batcher._take  # the bug is gone; the restarted scheduler serves again
    await wait_healthy(batcher)
    assert await asyncio.wait_for(batcher.submit([5, 6]), PATIENCE_S) == [50, 60]
    await batcher.close(1.0)


async def test_small_requests_go_ahead_of_queued_bulk_work() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=8,
        max_batch_delay_s=0.0,
        max_queue_size=64,
        priority_max_items=1,
    )
    gate = model.hold()
    first = asyncio.create_task(batcher.submit([0]))
    await model.wait_started()  # the runtime is busy
    bulk = [
        asyncio.create_task(batcher.submit(list(range(100 + 10 * i, 108 + 10 * i))))
        for i in range(4)
    ]
    await asyncio.sleep(0)
    single = asyncio.create_task(batcher.submit([7]))
    await asyncio.sleep(0)
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(single, PATIENCE_S) == [70]
    await asyncio.gather(first, *bulk)
    # The batch after the busy one starts with the single image, ahead of 32 bulk images
    # queued before it, and takes only a quarter of a batch (2) of bulk: it stays short.
    second = model.batches[1]
    assert second == [7, 100, 101]
    assert all(len(batch) == 8 for batch in model.batches[2:-1])  # then full bulk batches
    await batcher.close(1.0)


async def test_bulk_keeps_a_quarter_of_each_batch_while_small_requests_flood() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=8,
        max_batch_delay_s=0.0,
        max_queue_size=64,
        priority_max_items=1,
    )
    gate = model.hold()
    first = asyncio.create_task(batcher.submit([0]))
    await model.wait_started()
    bulk = asyncio.create_task(batcher.submit(list(range(100, 108))))
    singles = [asyncio.create_task(batcher.submit([s])) for s in range(1, 17)]
    await asyncio.sleep(0)
    model.gate = None
    gate.set()
    await asyncio.gather(first, bulk, *singles)
    second = model.batches[1]
    assert sorted(second) == [1, 2, 3, 4, 5, 6, 100, 101]  # 6 small, 2 (a quarter) bulk
    await batcher.close(1.0)


async def test_a_full_bulk_lane_refuses_bulk_but_not_small_requests() -> None:
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=4,
        max_batch_delay_s=SHORT_DELAY_S,
        max_queue_size=8,
        priority_max_items=1,
    )
    gate = model.hold()
    first = asyncio.create_task(batcher.submit([0]))
    await model.wait_started()
    bulk = asyncio.create_task(batcher.submit(list(range(100, 108))))  # fills the bulk lane
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="queue holds 8 of 8"):
        await batcher.submit([200, 201])
    small = asyncio.create_task(batcher.submit([5]))  # its own lane: accepted
    await asyncio.sleep(0)
    assert batcher.queued_items == 9
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(small, PATIENCE_S) == [50]
    await asyncio.gather(first, bulk)
    await batcher.close(1.0)


class Finisher(Gated):
    """The second stage: one more than the model's output."""

    def __call__(self, items: list[int], outputs: list[int]) -> list[int]:
        self.enter(items)
        return [output + 1 for output in outputs]


def make_two_stage(
    model: Model, finisher: Finisher, max_finishing_batches: int = 1
) -> DynamicBatcher[int, int]:
    return DynamicBatcher(
        model,
        max_batch_size=2,
        max_batch_delay_s=0,
        max_queue_size=16,
        finish_fn=finisher,
        max_finishing_batches=max_finishing_batches,
    )


async def test_the_next_batch_runs_in_the_model_while_the_last_one_finishes() -> None:
    model, finisher = Model(), Finisher()
    batcher = make_two_stage(model, finisher)
    finisher.gate = threading.Event()
    first = asyncio.create_task(batcher.submit([1]))
    await finisher.wait_started()
    assert batcher.running_batches == 0  # the model's slot was handed on
    # The first batch is still finishing, and the second goes through the model meanwhile.
    model.started.clear()
    second = asyncio.create_task(batcher.submit([2]))
    await model.wait_started()
    assert not first.done()
    finisher.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), PATIENCE_S)) == [[11], [21]]
    assert finisher.batches == [[1], [2]]
    await batcher.close()


async def test_a_batch_waits_for_a_finishing_slot_holding_the_model() -> None:
    model, finisher = Model(), Finisher()
    batcher = make_two_stage(model, finisher, max_finishing_batches=1)
    finisher.gate = threading.Event()
    first = asyncio.create_task(batcher.submit([1]))
    await finisher.wait_started()
    model.started.clear()
    second = asyncio.create_task(batcher.submit([2]))
    await model.wait_started()
    for _ in range(5):
        await asyncio.sleep(0)
    # The second batch left the model but cannot finish yet: it keeps the model's slot, so a
    # third request cannot start a batch (back-pressure instead of a pile of raw outputs).
    assert batcher.running_batches == 1
    third = asyncio.create_task(batcher.submit([3]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(model.batches) == 2
    assert batcher.queued_items == 1
    finisher.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, third), PATIENCE_S)
    assert list(results) == [[11], [21], [31]]
    await batcher.close()


async def test_a_failed_finish_fails_its_batch_and_the_batcher_goes_on() -> None:
    model, finisher = Model(), Finisher()
    batcher = make_two_stage(model, finisher)
    finisher.error = ValueError("encoder exploded")
    with pytest.raises(ValueError, match="encoder exploded"):
        await asyncio.wait_for(batcher.submit([1, 2]), PATIENCE_S)
    finisher.error = None
    assert await asyncio.wait_for(batcher.submit([3]), PATIENCE_S) == [31]
    assert batcher.running_batches == 0
    await batcher.close()


async def test_a_finish_with_the_wrong_result_count_fails_the_batch() -> None:
    def drops_one(items: list[int], outputs: list[int]) -> list[int]:
        return outputs[:-1]

    batcher = DynamicBatcher(
        Model(), max_batch_size=4, max_batch_delay_s=0, max_queue_size=8, finish_fn=drops_one
    )
    with pytest.raises(BatchSizeMismatch, match="returned 1 results for 2 items"):
        await asyncio.wait_for(batcher.submit([1, 2]), PATIENCE_S)
    await batcher.close()


async def test_close_waits_for_batches_that_are_finishing() -> None:
    model, finisher = Model(), Finisher()
    batcher = make_two_stage(model, finisher)
    finisher.gate = threading.Event()
    request = asyncio.create_task(batcher.submit([4]))
    await finisher.wait_started()
    closing = asyncio.create_task(batcher.close(PATIENCE_S))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not closing.done()
    finisher.gate.set()
    await asyncio.wait_for(closing, PATIENCE_S)
    assert request.result() == [41]


async def test_batches_run_in_the_batchers_threads_and_skip_a_finish_they_do_not_need() -> None:
    model, finisher = Model(), Finisher()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=4,
        max_batch_delay_s=0,
        max_queue_size=16,
        finish_fn=finisher,
        needs_finish=lambda items, outputs: items[0] != 0,  # a batch led by 0 needs none
        thread_name="infer-test",
        finish_thread_name="encode-test",
    )
    assert await asyncio.wait_for(batcher.submit([1, 2]), PATIENCE_S) == [11, 21]
    assert await asyncio.wait_for(batcher.submit([0, 3]), PATIENCE_S) == [0, 30]
    assert [name.split("_")[0] for name in model.threads] == ["infer-test", "infer-test"]
    assert [name.split("_")[0] for name in finisher.threads] == ["encode-test"]
    assert finisher.batches == [[1, 2]]
    await batcher.close()


async def test_requests_that_arrive_during_a_run_join_the_next_batch_whole() -> None:
    """The next batch is formed when the model is free, from everything queued by then."""
    model = Model()
    batcher = make(model, max_batch_size=8, max_batch_delay_s=0)
    gate, busy = await occupy(batcher, model)
    waiters = [asyncio.create_task(batcher.submit([i])) for i in range(1, 6)]
    await wait_queued(batcher, 5)
    model.gate = None
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), PATIENCE_S) == [
        [i * 10] for i in range(1, 6)
    ]
    await busy
    assert model.batches == [[0], [1, 2, 3, 4, 5]]
    await batcher.close()


async def test_a_scheduling_failure_with_a_batch_in_hand_fails_that_batch_at_once() -> None:
    """A bug after a batch was taken (here: the observer) fails that batch's callers with
    SchedulerFailed at once, not at their deadline, and the batcher restarts."""
    from service.batching import SchedulerFailed, SchedulerRestarting

    class BrokenObserver(QueueWatch):
        broken = True

        def batch_started(self, queue_waits_s: list[float]) -> None:
            if self.broken:
                raise RuntimeError("observer bug")

    observer = BrokenObserver()
    model = Model()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        model,
        max_batch_size=4,
        max_batch_delay_s=0,
        max_queue_size=16,
        observer=observer,
        restart_delay_s=0.5,
    )
    with pytest.raises(SchedulerFailed, match="observer bug"):
        await asyncio.wait_for(batcher.submit([1, 2], timeout_s=LONG_DELAY_S), PATIENCE_S)
    # Its caller wakes up to a batcher already restarting, so a request sent now is refused
    # at once instead of being queued and then failed by the same fault.
    assert not batcher.healthy
    with pytest.raises(SchedulerRestarting):
        await batcher.submit([9])
    assert model.batches == []  # the model never saw it
    observer.broken = False
    await wait_healthy(batcher)
    assert await asyncio.wait_for(batcher.submit([3]), PATIENCE_S) == [30]
    await batcher.close()


def test_a_submit_from_another_event_loop_is_refused_not_left_hanging() -> None:
    model = Model()
    batcher = make(model, max_batch_delay_s=0)

    async def first_loop() -> list[int]:
        return await asyncio.wait_for(batcher.submit([1]), PATIENCE_S)

    assert asyncio.run(first_loop()) == [10]

    async def second_loop() -> None:
        with pytest.raises(RuntimeError, match="from the event loop that started it"):
            await batcher.submit([2])

    asyncio.run(second_loop())
    assert model.batches == [[1]]
