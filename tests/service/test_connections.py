"""The connection limits' protocol, driven byte by byte through a fake transport: what counts
against the header cap, when deadlines fire, and how a connection beyond the cap is refused.
The attacks themselves, against a real server, are in tests/reliability/test_connection_limits.py.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from service.connections import (
    LINGER_S,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    ensure_descriptors,
    limited_protocol,
)
from service.settings import Settings

LIMITS = ConnectionLimits(
    max_connections=2, max_header_bytes=1024, header_timeout_s=10.0, body_timeout_s=30.0
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.sends: list[bytes] = []  # what each write (or writelines) handed over at once
        self.closed = False
        self.eof_written = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.sends.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    @property
    def status(self) -> int:
        return int(bytes(self.written).split(b" ", 2)[1])

    @property
    def error_type(self) -> str:
        body = bytes(self.written).partition(b"\r\n\r\n")[2]
        return str(json.loads(body)["error"]["type"])


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the length of the body it read."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Harness:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.protocol_class = limited_protocol(LIMITS, self.reasons.append)
        self.config = uvicorn.Config(echo_length, log_level="warning", ws="none")
        self.config.load()
        self.state = ServerState()

    def connect(self) -> tuple[LimitedHttpToolsProtocol, FakeTransport]:
        protocol = self.protocol_class(config=self.config, server_state=self.state, app_state={})
        transport = FakeTransport()
        protocol.connection_made(transport)
        return protocol, transport


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    yield Harness()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_large_body_in_the_same_read_as_its_head_is_not_counted_as_head(
    harness: Harness,
) -> None:
    protocol, transport = harness.connect()
    body = b"x" * 100_000
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + body)
    await settle()
    assert transport.status == 200
    assert bytes(transport.written).endswith(b"100000")
    assert not transport.closed and harness.reasons == []


async def test_an_answer_leaves_in_one_send_head_and_body_together(harness: Harness) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    await settle()
    assert len(transport.sends) == 1
    head, _, body = transport.sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"3"
    # The next request on the connection too.
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    await settle()
    assert len(transport.sends) == 2 and transport.sends[1].endswith(b"\r\n\r\n1")


async def test_a_head_answer_and_100_continue_are_not_held_back(harness: Harness) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"HEAD /p HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert len(transport.sends) == 1 and transport.sends[0].startswith(b"HTTP/1.1 200")
    assert transport.sends[0].endswith(b"\r\n\r\n")  # the head alone: HEAD has no body
    protocol.data_received(
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    await settle()
    assert transport.sends[1] == b"HTTP/1.1 100 Continue\r\n\r\n"  # at once, not held
    protocol.data_received(b"ab")
    await settle()
    assert len(transport.sends) == 3 and transport.sends[2].startswith(b"HTTP/1.1 200")
    assert transport.sends[2].endswith(b"\r\n\r\n2")


async def test_an_idle_kept_alive_connection_is_closed_by_the_sweep(harness: Harness) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    assert transport.status == 200
    answered = monotonic()
    protocol.expire(answered + LIMITS.keep_alive_timeout_s - 0.5)
    assert not transport.closed
    protocol.expire(answered + LIMITS.keep_alive_timeout_s + 0.1)
    assert transport.closed


async def test_a_head_over_the_cap_gets_431_even_in_small_pieces(harness: Harness) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(200):  # 200 x 11 bytes > 1024, none of it alone too large
        if transport.eof_written:
            break
        protocol.data_received(b"X-A: bbbb\r\n")
    assert transport.status == 431 and transport.error_type == "header_too_large"
    assert transport.eof_written and harness.reasons == ["header_too_large"]
    before = len(transport.written)
    protocol.data_received(b"more bytes after the answer are read and dropped")
    assert len(transport.written) == before


async def test_a_pipelined_head_over_the_cap_while_an_answer_is_due_just_closes(
    harness: Harness,
) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # its answer is not sent yet
    protocol.data_received(b"GET / HTTP/1.1\r\nX-A: " + b"a" * 2000)
    assert transport.closed and not transport.written  # no 431 in the middle of an answer
    assert harness.reasons == ["header_too_large"]
    await settle()


async def test_each_request_on_a_connection_gets_the_whole_cap(harness: Harness) -> None:
    protocol, transport = harness.connect()
    request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 600 + b"\r\n\r\n"
    for _ in range(5):  # 5 x 640 bytes on one connection, each head under 1024
        protocol.data_received(request)
        await settle()
    assert bytes(transport.written).count(b"HTTP/1.1 200 OK") == 5
    assert harness.reasons == []


async def test_the_head_deadline_answers_408_and_a_silent_connection_is_just_closed(
    harness: Harness,
) -> None:
    slow, slow_transport = harness.connect()
    silent, silent_transport = harness.connect()
    slow.data_received(b"GET / HTTP/1.1\r\nHo")
    started = slow._phase_started
    slow.expire(started + LIMITS.header_timeout_s - 0.01)
    silent.expire(started + LIMITS.header_timeout_s - 0.01)
    assert not slow_transport.written and not silent_transport.closed
    slow.expire(started + LIMITS.header_timeout_s + 0.01)
    silent.expire(started + LIMITS.header_timeout_s + 0.01)
    assert slow_transport.status == 408 and slow_transport.error_type == "header_timeout"
    assert silent_transport.closed and not silent_transport.written
    assert harness.reasons == ["header_timeout"]
    slow.expire(started + LIMITS.header_timeout_s + LINGER_S + 0.02)
    assert slow_transport.closed


async def test_the_body_deadline_answers_408_and_the_app_sees_a_disconnect(
    harness: Harness,
) -> None:
    protocol, transport = harness.connect()
    protocol.data_received(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
    await settle()
    started = protocol._phase_started
    protocol.expire(started + LIMITS.body_timeout_s + 0.01)
    await settle()
    assert transport.status == 408 and transport.error_type == "body_timeout"
    assert transport.written.count(b"HTTP/1.1") == 1  # the app answered nothing after it
    assert protocol.cycle.disconnected and harness.reasons == ["body_timeout"]


async def test_a_connection_beyond_the_cap_gets_503_and_is_closed_at_once(
    harness: Harness,
) -> None:
    kept = [harness.connect() for _ in range(LIMITS.max_connections)]
    protocol, transport = harness.connect()
    assert transport.closed and transport.status == 503
    assert transport.error_type == "too_many_connections"
    assert protocol not in harness.state.connections
    assert len(harness.state.connections) == LIMITS.max_connections
    assert harness.reasons == ["too_many_connections"]
    kept[0][0].connection_lost(None)
    _, transport = harness.connect()
    assert not transport.closed


def test_the_limits_hold_by_default() -> None:
    """`imagegen serve` with no settings has every limit on."""
    defaults = Settings()
    assert defaults.max_header_bytes == 32_768
    assert 0 < defaults.header_timeout_s <= 30
    assert 0 < defaults.body_timeout_s <= 60
    assert 0 < defaults.keep_alive_timeout_s <= 30
    assert 0 < defaults.max_connections <= 4096


def test_the_open_file_limit_is_raised_to_fit_the_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1_500:
        pytest.skip(f"the hard open-file limit ({hard}) is below what this test raises to")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
        ensure_descriptors(1_000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1_256
        ensure_descriptors(10)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1_256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
