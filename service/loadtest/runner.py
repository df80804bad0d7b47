"""The two load models over one keep-alive httpx pool.

Closed loop: `concurrency` clients each send their next request as soon as the last one is
answered; throughput and latency are taken from requests completed inside the measured window.

Open loop: requests arrive at a fixed rate (evenly spaced or Poisson) whatever the server does;
each request's latency runs from its *intended* start, so neither a slow server nor a late
client can hide queueing (no coordinated omission). Throughput counts completions in the
window; latency covers every arrival scheduled in it.

Each step starts with a warm-up that is not measured; `/metrics` is scraped when the window
opens and after it closes, and the tool's CPU time over the window gives the cores it used.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import httpx

from service.loadtest.scrape import Snapshot, parse_model_sums, server_figures
from service.loadtest.stats import Recorder, StepResult, build_step
from service.loadtest.target import RequestFactory, Target, error_kind
from service.loadtest.transport import LeanTransport

Arrivals = Literal["constant", "poisson"]
PROGRESS_INTERVAL_S = 0.5


class Progress(Protocol):
    """Told twice a second how the running step goes; must be cheap."""

    def update(
        self, label: str, elapsed_s: float, duration_s: float, recorder: Recorder, since: int
    ) -> None: ...

    def done(self) -> None: ...


def arrival_offsets(
    rate_per_s: float, until_s: float, arrivals: Arrivals, rng: random.Random
) -> Iterator[float]:
    """Intended start times (seconds from the step's start) of an open-loop step."""
    if not rate_per_s > 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate_per_s}")
    if arrivals == "constant":
        index = 0
        while (offset := index / rate_per_s) < until_s:
            yield offset
            index += 1
        return
    offset = rng.expovariate(rate_per_s)
    while offset < until_s:
        yield offset
        offset += rng.expovariate(rate_per_s)


@dataclass
class _Window:
    """The measured window of a step on the perf_counter clock."""

    opens_at: float
    closes_at: float
    cpu_at_open: float = math.nan
    opened_wall: float = math.nan
    metrics_before: Snapshot | None = None

    @property
    def duration_s(self) -> float:
        return self.closes_at - self.opens_at


class LoadRunner:
    """Runs steps against one target with one client; a step never raises for a bad answer."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        target: Target,
        *,
        progress: Progress | None = None,
        factory: RequestFactory | None = None,
        clock: Callable[[], float] = time.perf_counter,
        metrics_client: httpx.AsyncClient | None = None,
        lean: LeanTransport | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.client = client
        # With a lean transport the hot loop hands it ready request bytes (no httpx objects).
        self.lean = lean
        # Scrapes go over their own connection: in the load's pool they would queue behind
        # the clients (with one client, until the step ends).
        self.metrics_client = metrics_client if metrics_client is not None else client
        self.target = target
        self.factory = factory if factory is not None else RequestFactory(target)
        self.progress = progress
        self._clock = clock
        self._metrics_url = f"{target.base_url.rstrip('/')}/metrics"

    # -- one request -------------------------------------------------------------------------

    def _sender(self, healthz: bool = False) -> Callable[[], Awaitable[int | str]]:
        """A function that sends the next request: its status code, or the client error kind."""
        factory = self.factory
        lean = self.lean
        if lean is not None:
            exchange, address = lean.exchange, factory.address
            timeout_s = self.timeout_s
            next_payload: Callable[[], bytes] = factory.next_payload
            if healthz:
                payload = factory.healthz_payload
                next_payload = lambda: payload  # noqa: E731

            async def send_lean() -> int | str:
                try:
                    status, _, _ = await exchange(
                        address,
                        next_payload(),
                        connect_timeout_s=timeout_s,
                        read_timeout_s=timeout_s,
                    )
                except (httpx.HTTPError, OSError) as error:
                    return error_kind(error)
                return status

            return send_lean
        request, headers = self.client.request, factory.headers
        healthz_url = f"{self.target.base_url.rstrip('/')}/healthz"
        next_request = (lambda: ("GET", healthz_url, None)) if healthz else factory.next

        async def send_httpx() -> int | str:
            method, url, body = next_request()
            try:
                response = await request(method, url, content=body, headers=headers)
            except (httpx.HTTPError, OSError) as error:
                return error_kind(error)
            return response.status_code

        return send_httpx

    async def scrape(self) -> Snapshot | None:
        try:
            response = await self.metrics_client.get(self._metrics_url)
        except (httpx.HTTPError, OSError):
            return None
        if response.status_code != 200:
            return None
        return parse_model_sums(response.text, self.target.model)

    # -- steps -------------------------------------------------------------------------------

    async def _open_window(self, window: _Window, scrape: bool) -> None:
        delay = window.opens_at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        window.opened_wall = self._clock()
        window.cpu_at_open = time.process_time()
        if scrape:
            window.metrics_before = await self.scrape()

    async def _watch(self, label: str, window: _Window, recorder: Recorder) -> None:
        if self.progress is None:
            return
        seen = 0
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            elapsed = self._clock() - window.opens_at
            self.progress.update(label, elapsed, window.duration_s, recorder, seen)
            seen = len(recorder.latencies_s)

    async def _close_window(self, window: _Window, scrape: bool) -> tuple[float, Snapshot | None]:
        """At the window's close: the CPU the tool used inside it, then the closing scrape."""
        delay = window.closes_at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        cpu_s = time.process_time() - window.cpu_at_open
        wall_s = self._clock() - window.opened_wall
        if wall_s > 0:  # scale to the window in case either edge was noticed a little late
            cpu_s *= window.duration_s / wall_s
        return cpu_s, (await self.scrape() if scrape else None)

    async def closed_step(
        self,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        *,
        label: str | None = None,
        scrape: bool = True,
        healthz: bool = False,
    ) -> StepResult:
        """`concurrency` clients back to back; figures from answers inside the window."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        label = label or f"c={concurrency}"
        images = 0 if healthz else self.target.items
        recorder = Recorder()
        send = self._sender(healthz)
        start = self._clock()
        window = _Window(opens_at=start + warmup_s, closes_at=start + warmup_s + duration_s)
        clock, opens_at, closes_at = self._clock, window.opens_at, window.closes_at

        async def client_loop() -> None:
            while True:
                sent = clock()
                if sent >= closes_at:
                    return
                outcome = await send()
                answered = clock()
                if opens_at <= answered < closes_at:
                    recorder.record(outcome, answered - sent, images)

        async def timeline() -> tuple[float, Snapshot | None]:
            await self._open_window(window, scrape)
            return await self._close_window(window, scrape)

        edges = asyncio.create_task(timeline())
        watcher = asyncio.create_task(self._watch(label, window, recorder))
        try:
            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
            cpu_s, metrics_after = await edges
        finally:
            watcher.cancel()
            edges.cancel()
            if self.progress is not None:
                self.progress.done()
        return build_step(
            recorder,
            label=label,
            mode="closed",
            level=concurrency,
            endpoint="healthz" if healthz else self.target.endpoint,
            items_per_request=images,
            duration_s=window.duration_s,
            client_cpu_s=cpu_s,
            server=server_figures(window.metrics_before, metrics_after),
        )

    async def open_step(
        self,
        rate_per_s: float,
        duration_s: float,
        warmup_s: float,
        *,
        arrivals: Arrivals = "constant",
        max_in_flight: int = 1024,
        rng: random.Random | None = None,
        label: str | None = None,
        scrape: bool = True,
    ) -> StepResult:
        """Requests at `rate_per_s` whatever the server does; latency from intended start."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        label = label or f"{rate_per_s:g}/s"
        rng = rng if rng is not None else random.Random()
        images = self.target.items
        arrived = Recorder()  # arrivals scheduled in the window, however late they are answered
        answered_in_window = Recorder()  # answers inside the window: the throughput
        lags_s: list[float] = []
        not_sent = 0
        in_flight: set[asyncio.Task[None]] = set()
        start = self._clock()
        window = _Window(opens_at=start + warmup_s, closes_at=start + warmup_s + duration_s)
        send = self._sender()
        clock, opens_at, closes_at = self._clock, window.opens_at, window.closes_at

        async def one(intended: float) -> None:
            measured = intended >= opens_at
            if measured:
                lags_s.append(clock() - intended)
            outcome = await send()
            answered = clock()
            if opens_at <= answered < closes_at:
                answered_in_window.record(outcome, answered - intended, images)
            if measured:
                arrived.record(outcome, answered - intended, images)

        async def timeline() -> tuple[float, Snapshot | None]:
            await self._open_window(window, scrape)
            return await self._close_window(window, scrape)

        edges = asyncio.create_task(timeline())
        watcher = asyncio.create_task(self._watch(label, window, arrived))
        try:
            for offset in arrival_offsets(rate_per_s, warmup_s + duration_s, arrivals, rng):
                intended = start + offset
                delay = intended - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(in_flight) >= max_in_flight:
                    if intended >= opens_at:
                        not_sent += 1
                    continue
                task = asyncio.create_task(one(intended))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            cpu_s, metrics_after = await edges
            if in_flight:
                await asyncio.wait(set(in_flight))
        finally:
            watcher.cancel()
            edges.cancel()
            if self.progress is not None:
                self.progress.done()
        return build_step(
            arrived,
            label=label,
            mode="open",
            level=rate_per_s,
            endpoint=self.target.endpoint,
            items_per_request=images,
            duration_s=window.duration_s,
            client_cpu_s=cpu_s,
            server=server_figures(window.metrics_before, metrics_after),
            dispatch_lags_s=lags_s,
            not_sent=not_sent,
            throughput=answered_in_window,
        )

    async def ceiling(self, concurrency: int, duration_s: float, warmup_s: float) -> StepResult:
        """The tool's own limit on this machine: closed loop against the trivial `/healthz`."""
        return await self.closed_step(
            concurrency,
            duration_s,
            warmup_s,
            label=f"ceiling /healthz c={concurrency}",
            scrape=False,
            healthz=True,
        )
