"""`imagegen serve --workers N`: every worker serves, /metrics adds them all up, and a worker
that dies is replaced while the others keep serving. (SIGTERM under load with workers is in
test_shutdown.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import psutil

from tests.reliability.conftest import TINY, Launcher
from tests.reliability.harness import Server, parse_metrics, request

PATIENCE_S = 60.0


async def scrape(server: Server) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/metrics")
    return parse_metrics(response.text)


async def worker_requests(server: Server) -> dict[str, float]:
    """imagegen_process_requests by worker pid, as /metrics reports it."""
    return {
        name.split('pid="')[1].split('"')[0]: value
        for name, value in (await scrape(server)).items()
        if name.startswith("imagegen_process_requests{")
    }


def worker_pids(server: Server) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    return {
        child.pid
        for child in psutil.Process(server.process.pid).children()
        if "spawn_main" in " ".join(child.cmdline())
    }


async def generate_many(server: Server, count: int, first_seed: int) -> list[int]:
    """`count` generate requests, each on its own connection; their statuses."""

    async def one(seed: int) -> int:
        body = json.dumps({"seed": seed}).encode()
        outcome = await request("POST", server.port, f"/v1/models/{TINY}/generate", body)
        return outcome.status or 0

    return list(await asyncio.gather(*(one(first_seed + i) for i in range(count))))


async def test_two_workers_both_serve_and_metrics_add_them_up(serve: Launcher) -> None:
    server = serve(workers=2)
    pids = worker_pids(server)
    assert len(pids) == 2
    statuses = await generate_many(server, 200, 0)
    assert statuses == [200] * 200
    counts = await worker_requests(server)
    assert {int(pid) for pid in counts} == pids, "both workers answered requests"
    assert all(count > 0 for count in counts.values())
    samples = await scrape(server)
    generated = sum(v for k, v in samples.items() if k.startswith("imagegen_images_generated"))
    assert generated >= 200  # every worker's images, in one scrape (plus warm-up)


async def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    serve: Launcher,
) -> None:
    server = serve(workers=2)
    before = worker_pids(server)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # The survivor answers at once, while the replacement starts.
    statuses = await generate_many(server, 50, 1000)
    assert statuses == [200] * 50
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        now = worker_pids(server)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.2)
    after = worker_pids(server)
    assert len(after) == 2 and victim not in after and (before - {victim}) <= after
    replacement = (after - before).pop()
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline and str(replacement) not in await worker_requests(server):
        await generate_many(server, 20, 5000)
    counts = await worker_requests(server)
    assert str(replacement) in counts, "the new worker serves"
    assert str(victim) not in counts, "the dead worker's series is gone"
    assert "exited with -9; starting a new one" in server.log()


def test_workers_that_cannot_start_stop_the_supervisor_with_the_reason(
    serve: Launcher, tmp_path: Path, models_dir: Path
) -> None:
    """A worker that exits for an operator's error (here a corrupted model) is not restarted
    in a loop: the supervisor stops every worker and exits with status 2, the reason logged."""
    broken = tmp_path / "broken-models"
    shutil.copytree(models_dir, broken)
    (broken / TINY / "model.onnx").write_bytes(b"corrupted")
    server = serve(models_dir=broken, workers=2, wait=False)
    assert server.process.wait(timeout=PATIENCE_S) == 2
    log = server.log()
    assert "refusing to start" in log and "could not start; stopping all workers" in log
    assert "starting a new one" not in log
    assert "Traceback" not in log
