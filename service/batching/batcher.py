"""Scheduling of the dynamic batcher: a bounded queue, batches formed by size or age, deadlines.

It knows nothing of HTTP or ONNX: it groups items from many callers, hands them to an async
batch function that returns one result per item, and answers every caller with its results,
the batch's error, or a deadline error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from service.batching.errors import (
    BatcherClosed,
    BatchSizeMismatch,
    DeadlineExceeded,
    QueueFull,
    SchedulerFailed,
    SchedulerRestarting,
)

logger = logging.getLogger(__name__)

InT = TypeVar("InT")
OutT = TypeVar("OutT")

BatchFunction = Callable[[list[InT]], Awaitable[list[OutT]]]
# A second stage (e.g. encoding) over a batch's items and the first stage's results.
FinishFunction = Callable[[list[InT], list[OutT]], Awaitable[list[OutT]]]


class BatchObserver(Protocol):
    """Receives the batcher's measurements (metrics); every method must be cheap."""

    def queue_depth(self, images: int) -> None: ...

    def batch_started(self, queue_waits_s: list[float]) -> None: ...


class _NullObserver:
    def queue_depth(self, images: int) -> None:
        pass

    def batch_started(self, queue_waits_s: list[float]) -> None:
        pass


@dataclass(eq=False)
class _Request(Generic[InT, OutT]):
    """One caller's items; its items may be spread over several batches."""

    items: Sequence[InT]
    future: asyncio.Future[list[OutT]]
    enqueued_at: float  # time.monotonic()
    start_now: bool  # arrived to an empty queue with a free runtime slot: no batching delay
    results: list[OutT | None] = field(init=False)
    next_index: int = 0  # first item not yet taken into a batch
    unanswered: int = field(init=False)
    timer: asyncio.TimerHandle | None = None
    lane: _Lane[InT, OutT] | None = None

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)
        self.unanswered = len(self.items)

    @property
    def queued(self) -> int:
        return len(self.items) - self.next_index


_Slot = tuple[_Request[InT, OutT], int]


class _Lane(Generic[InT, OutT]):
    """One FIFO of requests and the number of their items not yet taken into a batch."""

    __slots__ = ("items", "requests")

    def __init__(self) -> None:
        self.requests: deque[_Request[InT, OutT]] = deque()
        self.items = 0

    def drop_dead_head(self) -> None:
        requests = self.requests
        while requests and (requests[0].future.done() or not requests[0].queued):
            requests.popleft()


class DynamicBatcher(Generic[InT, OutT]):
    """Groups items from concurrent callers into batches for `batch_fn`.

    A batch runs when `max_batch_size` items wait, when the oldest has waited
    `max_batch_delay_s`, or at once when an item arrives to an empty queue and an idle runtime.
    At most `max_concurrent_batches` batches run at a time.

    Requests of at most `priority_max_items` items wait in a lane of their own that batches
    take from first; a batch that carries them takes only a quarter of its size from bulk
    requests (so it is short), and bulk requests never starve. A one-image request is then
    not stuck behind another client's hundreds of queued images. Each lane holds at most
    `max_queue_size` items, so a bulk flood is refused before any small request is.
    `priority_max_items=0` keeps one lane for all.

    With `finish_fn`, each batch runs in two stages: `batch_fn` (the model) holds one of the
    `max_concurrent_batches` slots, and `finish_fn` (e.g. PNG encoding) runs after the slot is
    handed on, so the next batch's model run overlaps this batch's finishing. At most
    `max_finishing_batches` batches finish at a time; a batch that would exceed it keeps its
    slot until one is done (back-pressure, so finished-but-unencoded batches cannot pile up).
    A failed `finish_fn` fails every request in its batch.

    If the scheduling task itself ever fails (a bug, not a failed batch), every waiting caller
    gets SchedulerFailed at once, the batcher reports itself unhealthy, refuses new work with
    SchedulerRestarting for `restart_delay_s`, and then starts a new scheduler.
    """

    def __init__(
        self,
        batch_fn: BatchFunction[InT, OutT],
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue_size: int,
        max_concurrent_batches: int = 1,
        observer: BatchObserver | None = None,
        name: str = "batcher",
        restart_delay_s: float = 1.0,
        priority_max_items: int = 0,
        finish_fn: FinishFunction[InT, OutT] | None = None,
        max_finishing_batches: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not max_batch_delay_s >= 0:
            raise ValueError(f"max_batch_delay_s must be >= 0, got {max_batch_delay_s}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        if max_finishing_batches < 1:
            raise ValueError(f"max_finishing_batches must be >= 1, got {max_finishing_batches}")
        self._batch_fn = batch_fn
        self._finish_fn = finish_fn
        self._finishing = asyncio.Semaphore(max_finishing_batches)
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_size = max_queue_size
        self.max_concurrent_batches = max_concurrent_batches
        self.name = name
        self._observer: BatchObserver = observer if observer is not None else _NullObserver()
        self.priority_max_items = priority_max_items
        self._priority: _Lane[InT, OutT] = _Lane()
        self._bulk: _Lane[InT, OutT] = _Lane()
        self._lanes = (self._priority, self._bulk)
        self._queued_items = 0
        self._running_batches = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrent_batches)
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._closing = False
        self.restart_delay_s = restart_delay_s
        self.scheduler_failures = 0
        self.last_scheduler_error: str | None = None
        self._restart_timer: asyncio.TimerHandle | None = None

    @property
    def healthy(self) -> bool:
        """False from a scheduler failure until its replacement is running."""
        return self._restart_timer is None

    @property
    def queued_items(self) -> int:
        """Items waiting to be taken into a batch (not counting abandoned ones)."""
        return self._queued_items

    @property
    def running_batches(self) -> int:
        return self._running_batches

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        """Start the scheduler task; needs a running event loop."""
        if self._scheduler is None and self._restart_timer is None:
            self._scheduler = asyncio.get_running_loop().create_task(
                self._schedule(), name=f"{self.name}-scheduler"
            )
            self._scheduler.add_done_callback(self._scheduler_ended)

    def _scheduler_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return  # cancelled or ended by close(): nothing was lost
        error = task.exception()
        self.scheduler_failures += 1
        self.last_scheduler_error = repr(error)
        waiting = [r for lane in self._lanes for r in lane.requests if not r.future.done()]
        logger.error(
            "%s: the batch scheduler failed; failing %d waiting request(s), restarting in %g s",
            self.name,
            len(waiting),
            self.restart_delay_s,
            exc_info=error,
        )
        failure = SchedulerFailed(f"{self.name}: the batch scheduler failed: {error!r}")
        self._fail_all_queued(failure)
        self._queued_items = 0
        self._observer.queue_depth(0)
        self._scheduler = None
        if not self._closing:
            self._restart_timer = asyncio.get_running_loop().call_later(
                self.restart_delay_s, self._restart
            )

    def _restart(self) -> None:
        self._restart_timer = None
        if not self._closing:
            logger.warning("%s: batch scheduler restarted", self.name)
            self.start()

    async def submit(self, items: Sequence[InT], *, timeout_s: float | None = None) -> list[OutT]:
        """Queue `items` and wait for their results, in order.

        Raises QueueFull at once when the items do not fit, DeadlineExceeded when `timeout_s`
        passes first, BatcherClosed when draining, or whatever the batch function raised.
        """
        if self._closing:
            raise BatcherClosed(f"{self.name} is shutting down")
        if self._restart_timer is not None:
            raise SchedulerRestarting(
                f"{self.name}: the batch scheduler failed ({self.last_scheduler_error}) and is "
                "restarting"
            )
        if not items:
            return []
        lane = self._priority if len(items) <= self.priority_max_items else self._bulk
        if lane.items + len(items) > self.max_queue_size:
            which = "queue" if lane is self._bulk or not self.priority_max_items else "small lane"
            raise QueueFull(
                f"{self.name}: {which} holds {lane.items} of {self.max_queue_size} images; "
                f"no room for {len(items)} more"
            )
        self.start()
        loop = asyncio.get_running_loop()
        request: _Request[InT, OutT] = _Request(
            items=items,
            future=loop.create_future(),
            enqueued_at=time.monotonic(),
            # Abandoned requests may still sit in the deque; only live items count.
            start_now=self._queued_items == 0
            and self._running_batches < self.max_concurrent_batches,
        )
        if timeout_s is not None:
            request.timer = loop.call_later(max(timeout_s, 0.0), self._expire, request, timeout_s)
        request.lane = lane
        lane.requests.append(request)
        lane.items += len(items)
        self._queued_items += len(items)
        self._observer.queue_depth(self._queued_items)
        self._wakeup.set()
        try:
            return await request.future
        finally:
            # Also reached when the caller is cancelled: its queued items must not run.
            if request.timer is not None:
                request.timer.cancel()
            self._abandon(request)

    async def close(self, grace_s: float | None = None) -> None:
        """Stop taking work, run what is queued within `grace_s`, then fail what is left."""
        self._closing = True
        if self._restart_timer is not None:
            self._restart_timer.cancel()
            self._restart_timer = None
        self._wakeup.set()
        deadline = None if grace_s is None else time.monotonic() + grace_s

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if self._scheduler is not None:
            await asyncio.wait({self._scheduler}, timeout=remaining())
        if self._batch_tasks:
            await asyncio.wait(set(self._batch_tasks), timeout=remaining())
        leftovers = [t for t in (self._scheduler, *self._batch_tasks) if t and not t.done()]
        for task in leftovers:
            task.cancel()
        for task in leftovers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_all_queued(BatcherClosed(f"{self.name} closed before this request ran"))

    # -- internals ---------------------------------------------------------------------------

    def _fail_all_queued(self, error: BaseException) -> None:
        for lane in self._lanes:
            for request in lane.requests:
                self._fail(request, error)
            lane.requests.clear()
            lane.items = 0

    def _abandon(self, request: _Request[InT, OutT]) -> None:
        """Take a request's untaken items out of the count; the scheduler skips them later."""
        if request.queued:
            self._queued_items -= request.queued
            if request.lane is not None:
                request.lane.items -= request.queued
            request.next_index = len(request.items)
            self._observer.queue_depth(self._queued_items)

    def _fail(self, request: _Request[InT, OutT], error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._abandon(request)

    def _expire(self, request: _Request[InT, OutT], timeout_s: float) -> None:
        self._fail(
            request,
            DeadlineExceeded(f"{self.name}: deadline of {timeout_s * 1000:.0f} ms passed"),
        )

    async def _schedule(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            if batch is None:
                self._slots.release()
                return
            self._running_batches += 1
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    def _oldest(self) -> _Request[InT, OutT] | None:
        """The live request that has waited longest, across the lanes."""
        oldest = None
        for lane in self._lanes:
            lane.drop_dead_head()
            if lane.requests and (
                oldest is None or lane.requests[0].enqueued_at < oldest.enqueued_at
            ):
                oldest = lane.requests[0]
        return oldest

    async def _next_batch(self) -> list[_Slot[InT, OutT]] | None:
        """Wait for work and for the batch to fill or age; None once closing and empty."""
        while True:
            oldest = self._oldest()
            if oldest is None:
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not oldest.start_now:
                flush_at = oldest.enqueued_at + self.max_batch_delay_s
                while self._queued_items < self.max_batch_size and not self._closing:
                    wait_s = flush_at - time.monotonic()
                    if wait_s <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), wait_s)
                    except asyncio.TimeoutError:  # TimeoutError is an alias only from 3.11
                        break
            batch = self._take(self.max_batch_size)
            if batch:
                return batch

    def _take(self, limit: int) -> list[_Slot[InT, OutT]]:
        batch: list[_Slot[InT, OutT]] = []
        if self._priority.items:
            # Small requests first, and bulk ones only their quarter: a batch that carries
            # small requests stays short, so they are answered after one short run.
            bulk_share = min(self._bulk.items, max(1, limit // 4))
            self._take_from(self._priority, limit - bulk_share, batch)
            self._take_from(self._bulk, len(batch) + bulk_share, batch)
        else:
            self._take_from(self._bulk, limit, batch)
        self._observer.queue_depth(self._queued_items)
        return batch

    def _take_from(self, lane: _Lane[InT, OutT], limit: int, batch: list[_Slot[InT, OutT]]) -> None:
        requests = lane.requests
        while requests and len(batch) < limit:
            request = requests[0]
            if request.future.done() or not request.queued:
                requests.popleft()
                continue
            count = min(request.queued, limit - len(batch))
            batch.extend((request, request.next_index + k) for k in range(count))
            request.next_index += count
            lane.items -= count
            self._queued_items -= count
            if not request.queued:
                requests.popleft()

    async def _run_batch(self, batch: list[_Slot[InT, OutT]]) -> None:
        slot_held = True
        try:
            # Callers may have gone (cancelled, expired, failed) since the batch was taken.
            live = [(request, index) for request, index in batch if not request.future.done()]
            if not live:
                return
            now = time.monotonic()
            self._observer.batch_started([now - request.enqueued_at for request, _ in live])
            items = [request.items[index] for request, index in live]
            try:
                outputs = await self._batch_fn(items)
                self._check_count(outputs, len(live))
                if self._finish_fn is not None:
                    async with self._finishing:
                        # The model is free: the next batch runs while this one finishes.
                        slot_held = False
                        self._running_batches -= 1
                        self._slots.release()
                        outputs = await self._finish_fn(items, outputs)
                    self._check_count(outputs, len(live))
            except asyncio.CancelledError:
                for request in {request for request, _ in live}:
                    self._fail(request, BatcherClosed(f"{self.name} closed during the batch"))
                raise
            except Exception as error:
                logger.warning("%s: batch of %d failed: %r", self.name, len(live), error)
                for request in {request for request, _ in live}:
                    self._fail(request, error)
                return
            for (request, index), output in zip(live, outputs, strict=True):
                if request.future.done():
                    continue
                request.results[index] = output
                request.unanswered -= 1
                if not request.unanswered:
                    request.future.set_result(list(request.results))  # type: ignore[arg-type]
        finally:
            if slot_held:
                self._running_batches -= 1
                self._slots.release()

    def _check_count(self, outputs: object, expected: int) -> None:
        if not isinstance(outputs, list) or len(outputs) != expected:
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            raise BatchSizeMismatch(
                f"{self.name}: batch function returned {got} results for {expected} items"
            )
