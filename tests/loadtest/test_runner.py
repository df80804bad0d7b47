"""The load models against a loopback server: counts, errors, fresh seeds, open-loop timing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from service.loadtest.runner import LoadRunner
from service.loadtest.target import RequestFactory, Target
from service.loadtest.transport import LeanTransport
from tests.loadtest.conftest import MODEL, FakeServer


@pytest.fixture(params=["lean", "httpx"])
async def runner_for(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    """A factory of runners over the lean transport and over httpx's own."""
    opened: list[httpx.AsyncClient] = []

    def make(server: FakeServer, **target_options: object) -> LoadRunner:
        target = Target(server.url, MODEL, **target_options)  # type: ignore[arg-type]
        lean = LeanTransport(64) if request.param == "lean" else None
        client = httpx.AsyncClient(transport=lean, trust_env=False)
        side = httpx.AsyncClient(trust_env=False)
        opened.extend([client, side])
        return LoadRunner(
            client,
            target,
            factory=RequestFactory(target),
            metrics_client=side,
            lean=lean,
            timeout_s=5.0,
        )

    yield make
    for client in opened:
        await client.aclose()


async def test_closed_loop_counts_and_rates(fake_server: FakeServer, runner_for: object) -> None:
    runner = runner_for(fake_server)  # type: ignore[operator]
    fake_server.state.behaviour.delay_s = 0.002
    step = await runner.closed_step(4, duration_s=0.6, warmup_s=0.2)
    assert step.mode == "closed" and step.level == 4
    assert step.errors == {}
    assert step.successes > 50
    assert step.requests_per_s == pytest.approx(step.successes / 0.6)
    assert step.images_per_s == step.requests_per_s
    assert 2.0 <= step.latency_ms["p50"] <= step.latency_ms["p99"] <= step.latency_ms["max"]
    # The warm-up's requests reached the server but are not in the figures.
    assert fake_server.state.image_requests > step.requests
    assert 0 < step.client_cpu_cores < 2


async def test_every_request_gets_fresh_seeds(fake_server: FakeServer, runner_for: object) -> None:
    runner = runner_for(fake_server, endpoint="batch", items=5)  # type: ignore[operator]
    step = await runner.closed_step(3, duration_s=0.3, warmup_s=0.0, scrape=False)
    seeds = fake_server.state.seeds
    assert len(seeds) == len(set(seeds)) >= 5 * step.successes
    assert step.images == 5 * step.successes
    get = runner_for(fake_server, endpoint="get")  # type: ignore[operator]
    before = len(seeds)
    await get.closed_step(2, duration_s=0.2, warmup_s=0.0, scrape=False)
    assert len(set(seeds)) == len(seeds) > before


async def test_errors_are_counted_by_status(fake_server: FakeServer, runner_for: object) -> None:
    runner = runner_for(fake_server)  # type: ignore[operator]
    fake_server.state.behaviour.fail_every = 4
    step = await runner.closed_step(2, duration_s=0.5, warmup_s=0.0, scrape=False)
    failed = step.errors["503"]
    assert set(step.errors) == {"503"}
    assert failed == pytest.approx(step.requests / 4, abs=3)
    assert step.successes + failed == step.requests


async def test_server_figures_come_from_metrics(
    fake_server: FakeServer, runner_for: object
) -> None:
    fake_server.state.behaviour.batch_images_per_run = 6.0
    runner = runner_for(fake_server)  # type: ignore[operator]
    step = await runner.closed_step(2, duration_s=0.3, warmup_s=0.1)
    assert step.server.mean_batch_size == pytest.approx(6.0)
    assert step.server.mean_queue_wait_ms == pytest.approx(4.0)
    # The scrapes bracket the window; a request or two at each edge may fall either side.
    assert step.server.batches == pytest.approx(step.successes, rel=0.1, abs=5)


async def test_ceiling_hits_healthz_only(fake_server: FakeServer, runner_for: object) -> None:
    runner = runner_for(fake_server)  # type: ignore[operator]
    ceiling = await runner.ceiling(4, duration_s=0.3, warmup_s=0.0)
    assert ceiling.endpoint == "healthz"
    assert ceiling.successes > 10 and ceiling.errors == {}
    assert fake_server.state.image_requests == 0
    assert set(fake_server.state.paths) == {"/healthz"}
    assert ceiling.client_cpu_cores > 0


async def test_refused_connections_are_errors_not_crashes(runner_for: object) -> None:
    from tests.loadtest.conftest import FakeServer, FakeState, free_port

    gone = FakeServer(f"http://127.0.0.1:{free_port()}", FakeState(), 0)
    runner = runner_for(gone)  # type: ignore[operator]
    step = await runner.closed_step(1, duration_s=0.2, warmup_s=0.0, scrape=False)
    assert step.successes == 0
    assert set(step.errors) == {"ConnectError"}
    assert step.server.mean_batch_size is None


async def test_open_loop_keeps_its_rate_against_a_slow_server(
    fake_server: FakeServer, runner_for: object
) -> None:
    # One request at a time, 20 ms each: 50/s at most, while 100/s arrive.
    fake_server.state.behaviour.serial = True
    fake_server.state.behaviour.delay_s = 0.020
    runner = runner_for(fake_server)  # type: ignore[operator]
    step = await runner.open_step(
        100.0, duration_s=0.5, warmup_s=0.0, rng=random.Random(1), scrape=False
    )
    assert step.mode == "open"
    assert step.requests == 50  # every scheduled arrival was sent, none held back
    assert step.successes == 50
    # Queueing grows: the last arrivals waited for about 25 others at 20 ms each.
    assert step.latency_ms["max"] > 300
    assert step.latency_ms["p50"] > 100
    # Throughput counts answers inside the window: the server's 50/s at most, not the offered
    # 100/s (less on a busy machine, where a 20 ms sleep takes longer).
    assert 10 < step.requests_per_s < 65


async def test_open_loop_latency_runs_from_the_intended_start(fake_server: FakeServer) -> None:
    target = Target(fake_server.url, MODEL)
    lean = LeanTransport(64)  # the scheduling is shared; the lean client keeps up on any box
    runner = LoadRunner(httpx.AsyncClient(transport=lean), target, lean=lean)
    loop = asyncio.get_running_loop()
    # The client itself stalls for 300 ms (as a busy load generator would) 100 ms in:
    # arrivals due in the stall go out late, and their latency must show it.
    loop.call_later(0.1, time.sleep, 0.3)
    step = await runner.open_step(
        100.0, duration_s=1.0, warmup_s=0.0, rng=random.Random(1), scrape=False
    )
    assert step.requests == 100 and step.errors == {}
    assert step.latency_ms["max"] >= 250  # the server answers in about a millisecond
    assert step.dispatch_lag_ms_p99 is not None and step.dispatch_lag_ms_p99 >= 200
    # The thirty arrivals due in the stall are late; the other seventy were not held back.
    assert step.latency_ms["p50"] < 150
    await runner.client.aclose()


async def test_open_loop_caps_requests_in_flight(
    fake_server: FakeServer, runner_for: object
) -> None:
    fake_server.state.behaviour.delay_s = 0.3
    runner = runner_for(fake_server)  # type: ignore[operator]
    step = await runner.open_step(
        100.0, duration_s=0.2, warmup_s=0.0, max_in_flight=5, scrape=False
    )
    assert step.not_sent == 15
    assert step.errors == {"not-sent": 15}
    assert step.successes == 5
