"""Scheduling of the dynamic batcher: a bounded queue, batches formed by size or age, deadlines.

It knows nothing of HTTP or ONNX: it groups items from many callers into batches for a
blocking batch function that returns one result per item, and answers every caller with its
results, the batch's error, or a deadline error.

Callers wait on an asyncio event loop; the scheduling runs in a thread of the batcher's own,
the thread that also runs the batch function (for the service, the model's inference thread).
When the model is free, that thread forms the next batch from everything queued at that
moment and runs it at once; the results go back to the loop in one callback. A request crosses
between threads once each way, and no turn of the busy event loop stands between two model
runs (scheduling on the loop measured slower: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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

# Blocking; runs in the batcher's scheduling thread.
BatchFunction = Callable[[list[InT]], list[OutT]]
# A second stage (e.g. encoding) over a batch's items and the first stage's results; blocking,
# runs in the batcher's finishing thread.
FinishFunction = Callable[[list[InT], list[OutT]], list[OutT]]
# Whether a batch needs its second stage at all (the first may have done it).
NeedsFinish = Callable[[list[InT], list[OutT]], bool]


class BatchObserver(Protocol):
    """Receives the batcher's measurements (metrics); every method must be cheap and
    thread-safe (it is called from the event loop and from the scheduling thread)."""

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
    """One FIFO of requests and the number of their items not yet taken into a batch
    (guarded by the batcher's lock)."""

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
    `max_concurrent_batches` scheduling threads each run one batch at a time (the service uses
    one per model: onnxruntime parallelises inside a run).

    Requests of at most `priority_max_items` items wait in a lane of their own that batches
    take from first; a batch that carries them takes only a quarter of its size from bulk
    requests (so it is short), and bulk requests never starve. A one-image request is then
    not stuck behind another client's hundreds of queued images. Each lane holds at most
    `max_queue_size` items, so a bulk flood is refused before any small request is.
    `priority_max_items=0` keeps one lane for all.

    With `finish_fn`, each batch runs in two stages: `batch_fn` (the model) in the scheduling
    thread, then `finish_fn` (e.g. PNG encoding) in a finishing thread, so the next batch's
    model run overlaps this batch's finishing; `needs_finish` may say a batch needs no second
    stage (its first did the work). At most `max_finishing_batches` batches finish at a time;
    a batch that would exceed it keeps the model until one is done (back-pressure, so
    finished-but-unencoded batches cannot pile up). A failed `finish_fn` fails every request
    in its batch.

    If the scheduling itself ever fails (a bug, not a failed batch), every waiting caller
    gets SchedulerFailed at once, the batcher reports itself unhealthy, refuses new work with
    SchedulerRestarting for `restart_delay_s`, and then starts a new scheduling thread.
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
        needs_finish: NeedsFinish[InT, OutT] | None = None,
        max_finishing_batches: int = 1,
        thread_name: str | None = None,
        finish_thread_name: str | None = None,
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
        self._needs_finish = needs_finish
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_size = max_queue_size
        self.max_concurrent_batches = max_concurrent_batches
        self.name = name
        self._thread_name = thread_name or name
        self._observer: BatchObserver = observer if observer is not None else _NullObserver()
        self.priority_max_items = priority_max_items
        # The lock guards the lanes and counts, shared by the loop (submit, abandon) and the
        # scheduling threads (take); the condition wakes those threads.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._priority: _Lane[InT, OutT] = _Lane()
        self._bulk: _Lane[InT, OutT] = _Lane()
        self._lanes = (self._priority, self._bulk)
        self._queued_items = 0
        self._running_batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        # Bumped when the scheduling fails: the failed generation's threads stop.
        self._generation = 0
        self._closing = False
        self._stopped = False  # close's grace is over: no batch starts any more
        # Batches in the model or finishing, by id, so that close can fail them after its grace.
        self._in_flight: dict[int, list[_Slot[InT, OutT]]] = {}
        self._finish_slots = threading.BoundedSemaphore(max_finishing_batches)
        self._finishing: set[Future[list[OutT]]] = set()
        self._finisher = (
            ThreadPoolExecutor(
                max_workers=max_finishing_batches,
                thread_name_prefix=finish_thread_name or f"{self._thread_name}-finish",
            )
            if finish_fn is not None
            else None
        )
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
        """Batches in the model (a batch that only finishes no longer counts)."""
        return self._running_batches

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        """Start the scheduling threads; call from the event loop that submits."""
        if self._threads or self._restart_timer is not None or self._stopped:
            return
        self._loop = asyncio.get_running_loop()
        generation = self._generation
        self._threads = [
            threading.Thread(
                target=self._serve,
                args=(generation,),
                name=f"{self._thread_name}_{index}",
                daemon=True,
            )
            for index in range(self.max_concurrent_batches)
        ]
        for thread in self._threads:
            thread.start()

    def _scheduler_ended(
        self,
        generation: int,
        error: BaseException,
        batch: list[_Slot[InT, OutT]] | None = None,
    ) -> None:
        """On the loop: a scheduling thread failed outside any batch function, holding
        `batch` (if it had taken one). One callback, so the batch's callers wake up to a
        batcher already marked as restarting, never to one that still looks healthy."""
        failure = SchedulerFailed(f"{self.name}: the batch scheduler failed: {error!r}")
        if batch is not None:
            self._fail_batch(batch, failure)
        if generation != self._generation:
            return  # another thread of that generation reported first
        self._generation += 1
        self._threads = []
        self.scheduler_failures += 1
        self.last_scheduler_error = repr(error)
        with self._work:
            waiting = [r for lane in self._lanes for r in lane.requests if not r.future.done()]
            self._work.notify_all()  # the failed generation's other threads stop
        logger.error(
            "%s: the batch scheduler failed; failing %d waiting request(s), restarting in %g s",
            self.name,
            len(waiting),
            self.restart_delay_s,
            exc_info=error,
        )
        self._fail_all_queued(failure)
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
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            # The answers go to the loop that started the threads: here they would never come.
            raise RuntimeError(f"{self.name}: submit from the event loop that started it")
        request: _Request[InT, OutT] = _Request(
            items=items, future=loop.create_future(), enqueued_at=0.0, start_now=False
        )
        request.lane = lane
        with self._work:
            if lane.items + len(items) > self.max_queue_size:
                which = (
                    "queue" if lane is self._bulk or not self.priority_max_items else "small lane"
                )
                raise QueueFull(
                    f"{self.name}: {which} holds {lane.items} of {self.max_queue_size} images; "
                    f"no room for {len(items)} more"
                )
            request.enqueued_at = time.monotonic()
            # Abandoned requests may still sit in the deque; only live items count.
            request.start_now = (
                self._queued_items == 0 and self._running_batches < self.max_concurrent_batches
            )
            lane.requests.append(request)
            lane.items += len(items)
            self._queued_items += len(items)
            queued = self._queued_items
            self._work.notify()
        self.start()
        self._observer.queue_depth(queued)
        if timeout_s is not None:
            request.timer = loop.call_later(max(timeout_s, 0.0), self._expire, request, timeout_s)
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
        with self._work:
            self._work.notify_all()
        deadline = None if grace_s is None else time.monotonic() + grace_s

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        # The threads run what is queued, then end; then the batches still finishing end.
        for thread in self._threads:
            await asyncio.to_thread(thread.join, remaining())
        finishing = {asyncio.wrap_future(future) for future in list(self._finishing)}
        if finishing:
            await asyncio.wait(finishing, timeout=remaining())
        for _ in range(2):  # results the threads posted reach their callers
            await asyncio.sleep(0)
        with self._work:
            self._stopped = True
            self._work.notify_all()
        for batch in list(self._in_flight.values()):
            self._fail_batch(batch, BatcherClosed(f"{self.name} closed during the batch"))
        self._fail_all_queued(BatcherClosed(f"{self.name} closed before this request ran"))
        if self._finisher is not None:
            self._finisher.shutdown(wait=False, cancel_futures=True)

    # -- on the event loop -------------------------------------------------------------------

    def _fail_all_queued(self, error: BaseException) -> None:
        with self._work:
            requests = [request for lane in self._lanes for request in lane.requests]
            for lane in self._lanes:
                lane.requests.clear()
                lane.items = 0
            for request in requests:
                request.next_index = len(request.items)  # nothing of it is queued any more
            self._queued_items = 0
        for request in requests:
            if not request.future.done():
                request.future.set_exception(error)
        self._observer.queue_depth(0)

    def _abandon(self, request: _Request[InT, OutT]) -> None:
        """Take a request's untaken items out of the count; the scheduler skips them later."""
        with self._lock:
            queued = request.queued
            if not queued:
                return
            self._queued_items -= queued
            if request.lane is not None:
                request.lane.items -= queued
            request.next_index = len(request.items)
            depth = self._queued_items
        self._observer.queue_depth(depth)

    def _fail(self, request: _Request[InT, OutT], error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._abandon(request)

    def _expire(self, request: _Request[InT, OutT], timeout_s: float) -> None:
        self._fail(
            request,
            DeadlineExceeded(f"{self.name}: deadline of {timeout_s * 1000:.0f} ms passed"),
        )

    def _deliver(self, batch: list[_Slot[InT, OutT]], outputs: list[OutT]) -> None:
        self._in_flight.pop(id(batch), None)
        for (request, index), output in zip(batch, outputs, strict=True):
            if request.future.done():
                continue
            request.results[index] = output
            request.unanswered -= 1
            if not request.unanswered:
                request.future.set_result(list(request.results))  # type: ignore[arg-type]

    def _fail_batch(self, batch: list[_Slot[InT, OutT]], error: BaseException) -> None:
        self._in_flight.pop(id(batch), None)
        for request in {request for request, _ in batch}:
            self._fail(request, error)

    # -- in the scheduling threads -----------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        """Run `callback(*args)` on the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _serve(self, generation: int) -> None:
        batch: list[_Slot[InT, OutT]] | None = None
        try:
            while True:
                with self._work:
                    batch = self._next_batch(generation)
                    if batch is None:
                        return
                    self._running_batches += 1
                self._run_batch(batch)
                batch = None
        except BaseException as error:  # a bug in the scheduling, not a failed batch
            self._post(self._scheduler_ended, generation, error, batch)

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

    def _next_batch(self, generation: int) -> list[_Slot[InT, OutT]] | None:
        """With the lock held: wait for work and for the batch to fill or age; None once
        closing and empty, after close's grace, or when this thread's generation failed."""
        while True:
            if self._stopped or generation != self._generation:
                return None
            oldest = self._oldest()
            if oldest is None:
                if self._closing:
                    return None
                self._work.wait()
                continue
            if not oldest.start_now:
                flush_at = oldest.enqueued_at + self.max_batch_delay_s
                while self._queued_items < self.max_batch_size and not self._closing:
                    wait_s = flush_at - time.monotonic()
                    if wait_s <= 0:
                        break
                    self._work.wait(wait_s)
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

    def _run_batch(self, batch: list[_Slot[InT, OutT]]) -> None:
        """Run one taken batch's first stage here, hand it to the second, post the answers."""
        failure: Exception | None = None
        try:
            # Callers may have gone (cancelled, expired, failed) since the batch was taken.
            live = [(request, index) for request, index in batch if not request.future.done()]
            if not live:
                return
            now = time.monotonic()
            self._observer.batch_started([now - request.enqueued_at for request, _ in live])
            items = [request.items[index] for request, index in live]
            self._in_flight[id(live)] = live
            try:
                outputs = self._batch_fn(items)
                self._check_count(outputs, len(live))
                finish = self._finish_fn is not None and (
                    self._needs_finish is None or self._needs_finish(items, outputs)
                )
                if finish:
                    # Back-pressure: wait for a finishing slot while still holding the model.
                    self._finish_slots.acquire()
            except Exception as error:
                logger.warning("%s: batch of %d failed: %r", self.name, len(live), error)
                failure = error
        finally:
            # The model is free before anyone hears back: a caller that answers at once finds
            # an idle runtime (and its next request starts without the batching delay).
            with self._lock:
                self._running_batches -= 1
        if failure is not None:
            self._post(self._fail_batch, live, failure)
        elif not finish:
            self._post(self._deliver, live, outputs)
        else:
            assert self._finisher is not None
            future = self._finisher.submit(self._finish, items, outputs)
            self._finishing.add(future)
            future.add_done_callback(functools.partial(self._finished, live))

    def _finish(self, items: list[InT], outputs: list[OutT]) -> list[OutT]:
        """In the finishing thread: the second stage, checked."""
        assert self._finish_fn is not None
        finished = self._finish_fn(items, outputs)
        self._check_count(finished, len(items))
        return finished

    def _finished(self, batch: list[_Slot[InT, OutT]], future: Future[list[OutT]]) -> None:
        self._finish_slots.release()
        self._finishing.discard(future)
        if future.cancelled():
            self._post(
                self._fail_batch, batch, BatcherClosed(f"{self.name} closed during the batch")
            )
            return
        error = future.exception()
        if error is not None:
            logger.warning("%s: finishing a batch of %d failed: %r", self.name, len(batch), error)
            self._post(self._fail_batch, batch, error)
        else:
            self._post(self._deliver, batch, future.result())

    def _check_count(self, outputs: object, expected: int) -> None:
        if not isinstance(outputs, list) or len(outputs) != expected:
            got = len(outputs) if isinstance(outputs, list) else type(outputs).__name__
            raise BatchSizeMismatch(
                f"{self.name}: batch function returned {got} results for {expected} items"
            )
