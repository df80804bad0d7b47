"""A tiny imagegen look-alike on a loopback port, so the load-test tool meets real sockets.

It answers health, metrics (with the batching histograms the tool reads), model lookups (404
for unknown models, 401 without the right key) and the three image endpoints; a test sets how
it answers (a status for every n-th request, a delay, a closed connection).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MODEL = "fake-gan"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Behaviour:
    """How the fake answers; tests change it between runs."""

    api_key: str | None = None
    fail_every: int = 0  # every n-th image request gets `fail_status`
    fail_status: int = 503
    delay_s: float = 0.0  # per image request, awaited (the server stays responsive)
    serial: bool = False  # one image request at a time (a server with a single worker)
    chunked: bool = False  # image responses in chunked transfer encoding
    close_after: bool = False  # answer with Connection: close
    batch_images_per_run: float = 2.0  # what /metrics says each request's images ran with


@dataclass
class FakeState:
    behaviour: Behaviour = field(default_factory=Behaviour)
    image_requests: int = 0
    paths: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    batch_sum: float = 0.0
    batch_count: int = 0
    queue_wait_sum_s: float = 0.0
    lock: asyncio.Lock | None = None


def make_app(state: FakeState) -> Any:
    import json

    async def read_body(receive: Any) -> bytes:
        body = b""
        while True:
            message = await receive()
            body += bytes(message.get("body", b""))
            if not message.get("more_body"):
                return body

    async def answer(
        send: Any, status: int, body: bytes, content_type: bytes, extra: list[Any] | None = None
    ) -> None:
        behaviour = state.behaviour
        headers = [(b"content-type", content_type), *(extra or [])]
        if behaviour.close_after:
            headers.append((b"connection", b"close"))
        if behaviour.chunked and content_type == b"image/png":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            half = len(body) // 2
            await send({"type": "http.response.body", "body": body[:half], "more_body": True})
            await send({"type": "http.response.body", "body": body[half:], "more_body": False})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def error(status: int, kind: str, message: str) -> tuple[int, bytes]:
        return status, json.dumps({"error": {"type": kind, "message": message}}).encode()

    async def image_request(path: str, body: bytes) -> tuple[int, bytes, bytes]:
        behaviour = state.behaviour
        state.image_requests += 1
        number = state.image_requests
        if path.endswith("/generate"):
            state.seeds.append(json.loads(body)["seed"])
        elif path.endswith("/generate/batch"):
            request = json.loads(body)
            state.seeds.extend(range(request["seed"], request["seed"] + request["count"]))
        else:
            state.seeds.append(int(path.rsplit("/", 1)[1].removesuffix(".png")))
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        state.batch_sum += behaviour.batch_images_per_run
        state.batch_count += 1
        state.queue_wait_sum_s += 0.004
        if behaviour.fail_every and number % behaviour.fail_every == 0:
            status, payload = error(behaviour.fail_status, "queue_full", "busy")
            return status, payload, b"application/json"
        if path.endswith("/batch"):
            count = json.loads(body)["count"]
            images = [{"seed": 0, "png_base64": "AAAA"}] * count
            return 200, json.dumps({"images": images}).encode(), b"application/json"
        return 200, PNG_BYTES, b"image/png"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        state.paths.append(path)
        body = await read_body(receive)
        headers = dict(scope["headers"])
        if path == "/healthz":
            await answer(send, 200, b'{"status":"ok"}', b"application/json")
            return
        if path == "/metrics":
            text = (
                "# TYPE imagegen_batch_size_images histogram\n"
                f'imagegen_batch_size_images_count{{model="{MODEL}"}} {state.batch_count}.0\n'
                f'imagegen_batch_size_images_sum{{model="{MODEL}"}} {state.batch_sum}\n'
                f'imagegen_queue_wait_seconds_count{{model="{MODEL}"}} {state.batch_count}.0\n'
                f'imagegen_queue_wait_seconds_sum{{model="{MODEL}"}} {state.queue_wait_sum_s}\n'
                'imagegen_batch_size_images_sum{model="other"} 999.0\n'
            )
            await answer(send, 200, text.encode(), b"text/plain; version=0.0.4")
            return
        key = state.behaviour.api_key
        if key is not None and headers.get(b"authorization") != f"Bearer {key}".encode():
            status, payload = error(401, "unauthorized", "missing API key")
            await answer(send, status, payload, b"application/json")
            return
        prefix = "/v1/models/"
        model, _, rest = path.removeprefix(prefix).partition("/")
        if not path.startswith(prefix) or model != MODEL:
            status, payload = error(404, "model_not_found", f"no model named {model!r}")
            await answer(send, status, payload, b"application/json")
            return
        if not rest:
            await answer(send, 200, json.dumps({"name": MODEL}).encode(), b"application/json")
            return
        if state.behaviour.serial:
            assert state.lock is not None
            async with state.lock:
                status, payload, content_type = await image_request(path, body)
        else:
            status, payload, content_type = await image_request(path, body)
        await answer(send, status, payload, content_type)

    return app


@dataclass
class FakeServer:
    url: str
    state: FakeState
    port: int


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    state = FakeState()
    port = free_port()
    config = uvicorn.Config(
        make_app(state),
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        access_log=False,
    )
    server = uvicorn.Server(config)

    def serve() -> None:
        async def main() -> None:
            state.lock = asyncio.Lock()
            await server.serve()

        asyncio.run(main())

    thread = threading.Thread(target=serve, name="fake-imagegen", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake server did not start"
        time.sleep(0.01)
    try:
        yield FakeServer(f"http://127.0.0.1:{port}", state, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
