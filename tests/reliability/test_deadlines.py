"""Deadlines: requests whose deadline passes while they wait in the queue get 504 and cost
no inference, which the metrics show (images computed, batches run, rejections)."""

from __future__ import annotations

import asyncio
import json
import statistics

from tests.reliability.conftest import SLOW, Launcher
from tests.reliability.harness import Outcome, metric_sum, request, warnings_in
from tests.reliability.report import record

BLOCKER_IMAGES = 64  # one batch request that keeps the model busy
WAITERS = 24  # single-image requests queued behind it


async def _batch(port: int, count: int, seed: int = 0) -> Outcome:
    body = json.dumps({"count": count, "seed": seed}).encode()
    return await request("POST", port, f"/v1/models/{SLOW}/generate/batch", body, timeout_s=120)


async def test_requests_expiring_in_the_queue_get_504_and_cost_no_inference(
    serve: Launcher,
) -> None:
    sizes = {"max_batch_size": BLOCKER_IMAGES, "max_items_per_request": BLOCKER_IMAGES}
    # How long the blocker's batch takes here and now, on a server with a long deadline.
    calibration = serve(**sizes, log_level="warning")
    runs = [await _batch(calibration.port, BLOCKER_IMAGES) for _ in range(3)]
    assert all(run.status == 200 for run in runs), [run.status for run in runs]
    blocker_s = statistics.median(run.latency_s for run in runs)
    calibration.stop()

    # A deadline a quarter of the blocker's run: everything queued behind it expires first.
    deadline_s = blocker_s / 4
    server = serve(**sizes, request_timeout_ms=deadline_s * 1000)
    before = server.metrics()
    port = server.port
    blocker = asyncio.create_task(_batch(port, BLOCKER_IMAGES, seed=100))
    # The waiters go out once the blocker's batch runs (its queue wait is recorded as the
    # batch starts), so they queue behind it. A fixed pause could send them first on a fast
    # host, and then some of them ran beside the blocker's first images.
    started = metric_sum(before, "imagegen_queue_wait_seconds_count", model=SLOW)
    for _ in range(2000):
        samples = await asyncio.to_thread(server.metrics)
        if metric_sum(samples, "imagegen_queue_wait_seconds_count", model=SLOW) > started:
            break
        await asyncio.sleep(0.002)
    else:
        raise AssertionError("the blocker's batch never started")
    waiters = await asyncio.gather(
        *(
            request("POST", port, f"/v1/models/{SLOW}/generate", json.dumps({"seed": s}).encode())
            for s in range(WAITERS)
        )
    )
    blocked = await blocker
    # A blocker that passed its deadline was answered while its batch still ran: let it end,
    # then give any (wrongly) surviving waiter time to run before counting.
    for _ in range(300):
        images = metric_sum(server.metrics(), "imagegen_images_generated_total", model=SLOW)
        if images - metric_sum(before, "imagegen_images_generated_total", model=SLOW) > 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(blocker_s)
    after = server.metrics()

    assert all(outcome.complete for outcome in [blocked, *waiters])
    expired = [o for o in waiters if o.status == 504]
    assert {o.status for o in waiters} <= {200, 504}, [o.status for o in waiters]
    assert expired, "no request expired in the queue"
    for outcome in expired:
        error = json.loads(outcome.body)["error"]
        assert error["type"] == "deadline_exceeded", error
        assert "ms" in error["message"]

    def delta(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    # The blocker ran (it may itself have passed its deadline mid-run); the expired waiters
    # never reached the model: computed images are the blocker's plus the waiters' 200s.
    ok_waiters = sum(1 for o in waiters if o.status == 200)
    assert delta("imagegen_images_generated_total", model=SLOW) == BLOCKER_IMAGES + ok_waiters
    expected_504 = len(expired) + (blocked.status == 504)
    assert delta("imagegen_rejections_total", reason="deadline_exceeded") == expected_504
    assert metric_sum(after, "imagegen_queue_depth_images", model=SLOW) == 0
    assert not warnings_in(server.log()), warnings_in(server.log())

    record(
        "deadlines",
        blocker_run_s=round(blocker_s, 3),
        deadline_ms=round(deadline_s * 1000, 1),
        waiters=WAITERS,
        waiters_expired_504=len(expired),
        waiters_ok=ok_waiters,
        blocker_status=blocked.status,
        images_computed=delta("imagegen_images_generated_total", model=SLOW),
        batches_run=delta("imagegen_batch_size_images_count", model=SLOW),
    )
