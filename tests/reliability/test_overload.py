"""Overload: open-loop load at 3x the measured capacity is shed with 503s, never queued forever.

Capacity is measured first on this very machine (closed loop, enough clients to keep the
batcher full), so the test holds on a fast laptop and on two busy CPU cores alike.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from tests.reliability.conftest import SLOW, TINY, Launcher
from tests.reliability.harness import (
    Outcome,
    Server,
    closed_loop,
    is_png,
    metric_sum,
    open_loop,
    parse_metrics,
    request,
    warnings_in,
)
from tests.reliability.report import record

REQUEST_TIMEOUT_S = 10.0
MAX_QUEUE_IMAGES = 32
OVERLOAD_FACTOR = 3.0
OVERLOAD_S = 10.0
MAX_RSS_GROWTH_BYTES = 150 * 2**20


async def _sample(server: Server, stop: asyncio.Event, rss: list[int], depth: list[float]) -> None:
    """Memory and queue depth every 0.25 s while the load runs (metrics must stay answerable)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as http:
        while not stop.is_set():
            rss.append(server.rss_bytes())
            text = (await http.get("/metrics")).text
            depth.append(metric_sum(parse_metrics(text), "imagegen_queue_depth_images", model=SLOW))
            await asyncio.sleep(0.25)


async def _neighbour(port: int, stop: asyncio.Event) -> list[Outcome]:
    """Two clients on the other (fast) model while the slow one is overloaded."""
    outcomes: list[Outcome] = []

    async def client() -> None:
        while not stop.is_set():
            body = json.dumps({"seed": len(outcomes)}).encode()
            outcomes.append(
                await request("POST", port, f"/v1/models/{TINY}/generate", body, timeout_s=60)
            )

    await asyncio.gather(client(), client())
    return outcomes


async def test_open_loop_overload_is_shed_with_503_and_the_server_recovers(
    serve: Launcher,
) -> None:
    server = serve(
        max_batch_size=8,
        max_batch_delay_ms=5,
        max_queue_size=MAX_QUEUE_IMAGES,
        max_items_per_request=8,
        request_timeout_ms=REQUEST_TIMEOUT_S * 1000,
        log_level="warning",
    )
    port = server.port

    async def send(index: int) -> Outcome:
        body = json.dumps({"seed": index}).encode()
        # `Expect: 100-continue`: the server says when it has read the request, so the time
        # an accepted request takes is measured from there, not from the kernel's backlog.
        return await request(
            "POST",
            port,
            f"/v1/models/{SLOW}/generate",
            body,
            timeout_s=REQUEST_TIMEOUT_S * 3,
            expect_continue=True,
        )

    # Capacity: enough closed-loop clients to keep the queue busy without overflowing it.
    warm, _ = await closed_loop(4, 1.0, send)
    assert all(outcome.status == 200 for outcome in warm), [o.status for o in warm]
    _, capacity_per_s = await closed_loop(16, 3.0, send)
    assert capacity_per_s > 0
    before = server.metrics()
    baseline_rss = server.rss_bytes()

    stop = asyncio.Event()
    rss: list[int] = []
    depth: list[float] = []
    sampler = asyncio.create_task(_sample(server, stop, rss, depth))
    neighbour = asyncio.create_task(_neighbour(port, stop))
    target_per_s = OVERLOAD_FACTOR * capacity_per_s
    started = time.monotonic()
    outcomes, achieved_per_s = await open_loop(target_per_s, OVERLOAD_S, send)
    load_s = time.monotonic() - started
    stop.set()
    await sampler
    other_model = await neighbour
    after = server.metrics()

    broken = [(o.error, o.status) for o in outcomes if not o.complete]
    assert not broken, f"{len(broken)} requests got no whole answer: {broken[:10]}"
    statuses = {o.status for o in outcomes}
    assert statuses <= {200, 503}, statuses
    ok = [o for o in outcomes if o.status == 200]
    shed = [o for o in outcomes if o.status == 503]
    assert ok and shed, f"not overloaded: {len(ok)} ok, {len(shed)} shed"
    for outcome in shed:
        assert outcome.headers.get("retry-after", "").isdigit(), outcome.headers
        assert json.loads(outcome.body)["error"]["type"] == "queue_full"
    assert all(is_png(o.body) for o in ok)
    assert all(o.continued_at is not None for o in ok + shed)
    slowest_ok_s = max(o.latency_s for o in ok)
    slowest_accepted_s = max(o.done_at - o.continued_at for o in ok)  # type: ignore[operator]
    assert slowest_accepted_s <= REQUEST_TIMEOUT_S, slowest_accepted_s

    # Nothing lost, nothing run twice: one image per 200, and the queue never over its bound.
    images = metric_sum(after, "imagegen_images_generated_total", model=SLOW) - metric_sum(
        before, "imagegen_images_generated_total", model=SLOW
    )
    assert images == len(ok)
    assert max(depth) <= MAX_QUEUE_IMAGES
    growth = max(rss) - baseline_rss
    assert growth < MAX_RSS_GROWTH_BYTES, f"RSS grew {growth / 2**20:.0f} MiB"

    # Another model has its own queue: the overload of this one sheds none of its requests.
    assert other_model and all(o.status == 200 for o in other_model), [
        (o.status, o.error) for o in other_model if o.status != 200
    ]

    # Afterwards the server serves normally.
    assert metric_sum(server.metrics(), "imagegen_queue_depth_images", model=SLOW) == 0
    recovery, _ = await closed_loop(2, 1.0, send)
    assert recovery and all(o.status == 200 for o in recovery)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200
    assert not warnings_in(server.log()), warnings_in(server.log())

    record(
        "overload",
        capacity_per_s=round(capacity_per_s, 1),
        target_per_s=round(target_per_s, 1),
        achieved_per_s=round(achieved_per_s, 1),
        load_s=round(load_s, 1),
        requests=len(outcomes),
        ok=len(ok),
        shed_503=len(shed),
        ok_latency_median_s=round(statistics.median(o.latency_s for o in ok), 3),
        ok_latency_max_s=round(slowest_ok_s, 3),
        ok_after_acceptance_max_s=round(slowest_accepted_s, 3),
        shed_latency_median_s=round(statistics.median(o.latency_s for o in shed), 3),
        queue_depth_max=max(depth),
        other_model_ok=len(other_model),
        other_model_latency_median_s=round(statistics.median(o.latency_s for o in other_model), 3),
        rss_baseline_mib=round(baseline_rss / 2**20, 1),
        rss_growth_mib=round(growth / 2**20, 1),
    )
