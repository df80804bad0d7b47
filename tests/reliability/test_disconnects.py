"""Disconnects: clients that hang up at any point of a request leave nothing behind.

Queue depth returns to 0, abandoned images are never computed, the server's file
descriptors come back to where they were, its log holds no warning, and it keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct

import httpx

from tests.reliability.conftest import SLOW, TINY, Launcher
from tests.reliability.harness import HOST, Server, metric_sum, request, warnings_in
from tests.reliability.report import record

QUEUED_HANGUPS = 16


async def _hang_up(
    port: int, data: bytes, *, after_s: float = 0.0, reset: bool = False, read: int = 0
) -> None:
    """Connect, send `data`, optionally read `read` bytes of the answer, wait, then leave:
    a normal close (FIN) or, with `reset`, an abortive one (RST)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    if read:
        await reader.read(read)
    await asyncio.sleep(after_s)
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _post(path: str, body: bytes, *, length: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


async def _running(server: Server, before: dict[str, float]) -> None:
    """Wait until a batch beyond those counted in `before` has started."""
    name = "imagegen_batch_size_images_count"
    for _ in range(300):
        if metric_sum(server.metrics(), name, model=SLOW) > metric_sum(before, name, model=SLOW):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the blocking batch never started")


async def _settle(server: Server, baseline_fds: int) -> int:
    """Wait until the server holds no more descriptors than before (or 10 s); the count."""
    fds = server.open_fds()
    for _ in range(100):
        if fds <= baseline_fds:
            break
        await asyncio.sleep(0.1)
        fds = server.open_fds()
    return fds


async def test_clients_hanging_up_anywhere_leave_nothing_behind(serve: Launcher) -> None:
    server = serve(max_batch_size=64, max_items_per_request=64)
    port = server.port
    # Warm every path once so lazily created threads and buffers count in the baseline.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        assert (await http.post(f"/v1/models/{TINY}/generate", json={"seed": 1})).status_code == 200
        assert (
            await http.post(f"/v1/models/{SLOW}/generate/batch", json={"count": 2})
        ).status_code == 200
    before = server.metrics()
    baseline_fds = server.open_fds()
    generate = f"/v1/models/{SLOW}/generate"
    body = json.dumps({"seed": 5}).encode()

    # 1. Hang up while queued behind a long batch: those images must never be computed.
    blocker = asyncio.create_task(
        request("POST", port, f"{generate}/batch", json.dumps({"count": 64}).encode())
    )
    await _running(server, before)
    await asyncio.gather(
        *(
            _hang_up(port, _post(generate, body), after_s=0.05, reset=index % 2 == 0)
            for index in range(QUEUED_HANGUPS)
        )
    )
    assert (await blocker).status == 200
    # 2. Hang up half-way through the headers, or the body, or before sending anything.
    half_head = _post(generate, body)[:20]
    half_body = _post(generate, body[:3], length=len(body))
    cases = [b"", half_head, half_body]
    await asyncio.gather(
        *(_hang_up(port, data, after_s=0.1, reset=reset) for data in cases for reset in (0, 1))
    )
    # 3. Hang up after the first bytes of a large answer.
    big = json.dumps({"count": 64, "scale": 16}).encode()
    await asyncio.gather(
        *(
            _hang_up(port, _post(f"{generate}/batch", big), read=100, reset=reset)
            for reset in (False, True)
        )
    )

    fds = await _settle(server, baseline_fds)
    after = server.metrics()
    images = metric_sum(after, "imagegen_images_generated_total", model=SLOW) - metric_sum(
        before, "imagegen_images_generated_total", model=SLOW
    )
    assert metric_sum(after, "imagegen_queue_depth_images", model=SLOW) == 0
    # The blocker's 64 and the two large answers' 64 each; the queued hang-ups cost nothing.
    assert images == 64 * 3, images
    assert fds <= baseline_fds, f"{fds} descriptors open, {baseline_fds} before"
    log = server.log()
    assert not warnings_in(log), warnings_in(log)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.post(generate, json={"seed": 9})).status_code == 200

    record(
        "disconnects",
        queued_hangups=QUEUED_HANGUPS,
        partial_request_hangups=len(cases) * 2,
        mid_response_hangups=2,
        images_computed_for_hangups=images - 64 * 3,
        open_fds_before=baseline_fds,
        open_fds_after=fds,
    )
