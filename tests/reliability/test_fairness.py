"""Fairness between clients: one-image requests are not stuck behind another client's bulk work.

Eight-plus connections flood a real shipped model with 64-image batch requests (more images
than the queue holds, so the flood is shed), while one client asks for single images. With
the priority lane (the default, IMAGEGEN_PRIORITY_MAX_ITEMS=1) the single images wait for at
most the batch already running; with one queue for all (0) they wait behind the flood.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx

from tests.reliability.conftest import Launcher
from tests.reliability.harness import Server
from tests.reliability.report import record

SHIPPED = Path(__file__).resolve().parents[2] / "models"
MODEL = "fashion-gan"
FLOOD_CONNECTIONS = 10  # 10 x 64 images > the 512-image queue: the flood must be shed
FLOOD_ITEMS = 64
WARM_S = 2.0
PROBE_S = 8.0
# The target is a median under 50 ms on this 2-core machine when it is otherwise quiet
# (docs/reliability.md has the runs); shared with other work the same code measured 43 to 88 ms.
# Like the rest of the tier, the test asserts what holds on a busy machine too: the lane makes
# the single images several times faster than one queue does, and none of them is refused.
MIN_SPEEDUP = 5.0


async def _measure(server: Server) -> dict[str, object]:
    stop = asyncio.Event()
    flood_status: dict[int, int] = {}

    async def flood(index: int) -> None:
        seed = index * 10_000_000
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
            while not stop.is_set():
                seed += FLOOD_ITEMS
                body = {"count": FLOOD_ITEMS, "seed": seed}
                response = await http.post(f"/v1/models/{MODEL}/generate/batch", json=body)
                flood_status[response.status_code] = flood_status.get(response.status_code, 0) + 1

    floods = [asyncio.create_task(flood(i)) for i in range(FLOOD_CONNECTIONS)]
    await asyncio.sleep(WARM_S)
    latencies_ms: list[float] = []
    probe_status: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        deadline = time.monotonic() + PROBE_S
        seed = 0
        while time.monotonic() < deadline:
            seed += 1
            started = time.perf_counter()
            response = await http.post(f"/v1/models/{MODEL}/generate", json={"seed": seed})
            latencies_ms.append((time.perf_counter() - started) * 1000)
            probe_status[response.status_code] = probe_status.get(response.status_code, 0) + 1
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*floods)
    return {
        "median_ms": statistics.median(latencies_ms),
        "p90_ms": sorted(latencies_ms)[int(len(latencies_ms) * 0.9)],
        "probes": len(latencies_ms),
        "probe_status": probe_status,
        "flood_status": flood_status,
    }


async def test_a_one_image_request_is_not_stuck_behind_a_bulk_flood(serve: Launcher) -> None:
    fair = await _measure(serve(models_dir=SHIPPED, intra_op_threads=0))
    one_queue = await _measure(serve(models_dir=SHIPPED, intra_op_threads=0, priority_max_items=0))
    record(
        "fairness",
        flood_connections=FLOOD_CONNECTIONS,
        flood_images_per_request=FLOOD_ITEMS,
        priority_lane=fair,
        one_queue=one_queue,
    )
    assert fair["probe_status"] == {200: fair["probes"]}, "a one-image request was refused"
    assert 503 in fair["flood_status"], "the flood was never shed"  # type: ignore[operator]
    # The lane is what makes the difference: without it the same probe waits behind the flood.
    speedup = one_queue["median_ms"] / fair["median_ms"]  # type: ignore[operator]
    assert speedup >= MIN_SPEEDUP, (fair, one_queue)
