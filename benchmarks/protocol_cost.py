"""CPU per request of the HTTP protocol, in-process: uvicorn's httptools protocol, the one with
the connection limits (service/connections.py) and uvicorn's h11 protocol.

Keep-alive POSTs go through a fake transport, timed in thread CPU time so a busy machine
slows the run but does not inflate the figures. Two measures, medians over rounds taken in
turn: `parse` (the app task stubbed out: only the protocol's own work) and `request` (a
trivial ASGI app that reads the body and answers, through the event loop).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.protocol_cost [rounds]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.connections import ConnectionLimits, limited_protocol

REQUEST = (
    b"POST /v1/models/fashion-gan/generate HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"User-Agent: python-httpx/0.28\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nContent-Length: 12\r\nContent-Type: application/json\r\n"
    b'\r\n{"seed": 17}'
)


class NullTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(cls: type[asyncio.Protocol], loop: asyncio.AbstractEventLoop) -> Any:
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none")
    config.load()
    protocol: Any = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)  # type: ignore[call-arg]
    protocol.connection_made(NullTransport())
    return protocol


def parse_us(cls: type[asyncio.Protocol], loop: asyncio.AbstractEventLoop, n: int) -> float:
    protocol = _protocol(cls, loop)

    def answered_at_once(cycle: Any, app: Any) -> None:
        cycle.response_complete = True

    protocol._start_asgi_task = answered_at_once
    gc.collect()
    gc.disable()
    started = time.thread_time()
    for _ in range(n):
        protocol.data_received(REQUEST)
    elapsed = time.thread_time() - started
    gc.enable()
    return elapsed / n * 1e6


async def request_us(cls: type[asyncio.Protocol], n: int) -> float:
    protocol = _protocol(cls, asyncio.get_running_loop())
    gc.collect()
    gc.disable()
    started = time.thread_time()
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elapsed = time.thread_time() - started
    gc.enable()
    protocol.transport.close()
    return elapsed / n * 1e6


def main(rounds: int) -> None:
    limited = limited_protocol(ConnectionLimits(1024, 32768, 10.0, 30.0), lambda reason: None)
    parsers: dict[str, type[asyncio.Protocol]] = {
        "httptools": HttpToolsProtocol,
        "limited": limited,
    }
    loop = asyncio.new_event_loop()
    parse: dict[str, list[float]] = {name: [] for name in parsers}
    for _ in range(rounds):
        for name, cls in parsers.items():
            parse[name].append(parse_us(cls, loop, 5000))
    for name, values in parse.items():
        print(f"parse    {name:10} {statistics.median(values):6.1f} us/request (median)")
    whole = {**parsers, "h11": H11Protocol}
    timings: dict[str, list[float]] = {name: [] for name in whole}
    for _ in range(rounds):
        for name, cls in whole.items():
            timings[name].append(loop.run_until_complete(request_us(cls, 1000)))
    for name, values in timings.items():
        print(f"request  {name:10} {statistics.median(values):6.1f} us/request (median)")
    loop.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
