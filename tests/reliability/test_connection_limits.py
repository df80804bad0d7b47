"""Connection-level attacks against a real server: endless headers, slowloris, bodies that stop
short, `Expect: 100-continue` then silence, a connection flood beyond the cap, idle
connections. Each is bounded in count and time, on loopback; /healthz and a generate must keep
answering while it runs, and memory and descriptors must come back after it.

One server for the module (start-up is most of a test's time), with short deadlines so each
attack ends within seconds; the header cap is the default one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.settings import Settings
from tests.reliability.conftest import TINY
from tests.reliability.harness import (
    HOST,
    Outcome,
    Server,
    launch,
    metric_sum,
    request,
    warnings_in,
)
from tests.reliability.models import write_tiny
from tests.reliability.report import record

MAX_CONNECTIONS = 256
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_TIMEOUT_S = 1.0
SWEEP_S = 0.5  # the server checks deadlines every quarter of the shortest one
MAX_HEADER_BYTES = Settings.model_fields["max_header_bytes"].default  # the shipped default
GENERATE = f"/v1/models/{TINY}/generate"
MiB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("limits")
    write_tiny(root / "models", TINY)
    started = launch(
        root / "models",
        root / "server.log",
        max_connections=MAX_CONNECTIONS,
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S,
    )
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


# -- raw connections ----------------------------------------------------------------------


@dataclass
class Ending:
    """How one attacking connection ended: what the server sent, and when it closed."""

    opened_at: float
    data: bytes = b""
    closed_at: float | None = None  # None: still open when we stopped listening

    @property
    def status(self) -> int | None:
        """The final status the server sent (after any `100 Continue`)."""
        data = self.data
        while data.startswith(b"HTTP/1.1 100"):
            data = data.partition(b"\r\n\r\n")[2]
        if not data.startswith(b"HTTP/1.1 "):
            return None
        return int(data.split(b" ", 2)[1])

    @property
    def error_type(self) -> str | None:
        body = self.data.partition(b"\r\n\r\n")[2]
        while body.startswith(b"HTTP/1.1 "):  # after a 100 Continue
            body = body.partition(b"\r\n\r\n")[2]
        try:
            return str(json.loads(body)["error"]["type"])
        except (ValueError, KeyError, TypeError):
            return None

    @property
    def open_s(self) -> float:
        assert self.closed_at is not None
        return self.closed_at - self.opened_at


async def listen(reader: asyncio.StreamReader, ending: Ending, timeout_s: float) -> None:
    """Read until the server closes the connection (EOF or reset) or `timeout_s` passes."""
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    chunk = await reader.read(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    ending.closed_at = time.monotonic()
                    return
                ending.data += chunk


Send = Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]


async def attack(port: int, send: Send, listen_s: float) -> Ending:
    """One connection: `send` writes what it likes while we listen for the server's end."""
    ending = Ending(opened_at=time.monotonic())
    reader, writer = await asyncio.open_connection(HOST, port)
    sender = asyncio.create_task(send(writer))
    try:
        await listen(reader, ending, listen_s)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sender
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return ending


def head(path: str = "/healthz", method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- what the server does meanwhile -------------------------------------------------------


@dataclass
class Watch:
    """/healthz and a generate, each on a new connection every 0.1 s, and the server's RSS and
    open descriptors every 0.05 s, until stopped."""

    server: Server
    probe: bool = True  # False: only sample (a flood at the cap leaves no room for probes)
    outcomes: list[Outcome] = field(default_factory=list)
    rss_max: int = 0
    fds_max: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _probe(self) -> None:
        while not self._stop.is_set():
            self.outcomes += await asyncio.gather(
                request("GET", self.server.port, "/healthz", timeout_s=10),
                request("POST", self.server.port, GENERATE, b'{"seed": 7}', timeout_s=10),
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)

    async def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_max = max(self.rss_max, self.server.rss_bytes())
            self.fds_max = max(self.fds_max, self.server.open_fds())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)

    async def during(self, work: Awaitable[list[Ending]]) -> list[Ending]:
        tasks = [asyncio.create_task(self._sample())]
        if self.probe:
            tasks.append(asyncio.create_task(self._probe()))
        try:
            return await work
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def assert_answered(self) -> dict[str, object]:
        """Every probe got a whole 200 (the PNG for generate); the figures to record."""
        bad = [(o.status, o.error) for o in self.outcomes if o.status != 200 or not o.complete]
        assert self.outcomes and not bad, f"probes failed during the attack: {bad[:5]}"
        return {
            "probes_answered_200": len(self.outcomes),
            "probe_max_s": round(max(o.latency_s for o in self.outcomes), 3),
        }


def watched_attack(
    server: Server, sends: list[Send], listen_s: float
) -> tuple[list[Ending], Watch]:
    """One attacking connection per entry of `sends`, all at once, under a Watch; when they
    have ended, their endings and the watch."""

    async def run() -> tuple[list[Ending], Watch]:
        watch = Watch(server)
        attacks = (attack(server.port, send, listen_s) for send in sends)
        return list(await watch.during(asyncio.gather(*attacks))), watch

    return asyncio.run(run())


def settle(server: Server, fds_before: int, timeout_s: float = 10.0) -> None:
    """Wait until the server holds no more descriptors than before (the attack's are gone)."""
    deadline = time.monotonic() + timeout_s
    while server.open_fds() > fds_before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2 * SWEEP_S)  # a sweep after the burst gives freed memory back


def closed_by_limits(server: Server, reason: str) -> float:
    return metric_sum(server.metrics(), "imagegen_connections_closed_total", reason=reason)


def mib(value: int) -> float:
    return round(value / MiB, 1)


# -- the attacks --------------------------------------------------------------------------


def test_endless_headers_get_431_at_the_cap_and_memory_stays_flat(server: Server) -> None:
    """Four connections stream headers that never end (two as endless lines, two as one
    endless value): each is answered 431 after the cap and closed; the server does not grow."""
    settle(server, server.open_fds())
    rss_before, fds_before = server.rss_bytes(), server.open_fds()
    budget = 64 * MiB  # per connection, far beyond the cap: the server must stop it first

    async def lines(writer: asyncio.StreamWriter) -> None:
        writer.write(head().removesuffix(b"\r\n"))
        for index in range(budget // 8192):
            writer.write(f"X-Filler-{index}: ".encode() + b"a" * 8170 + b"\r\n")
            await writer.drain()

    async def one_value(writer: asyncio.StreamWriter) -> None:
        writer.write(head().removesuffix(b"\r\n") + b"X-Endless: ")
        for _ in range(budget // 65536):
            writer.write(b"b" * 65536)
            await writer.drain()

    endings, watch = watched_attack(server, [lines, one_value] * 2, 20)
    figures = watch.assert_answered()
    settle(server, fds_before)
    rss_after = server.rss_bytes()
    for ending in endings:
        assert ending.closed_at is not None, "an endless header was never cut off"
        assert ending.status in (431, None)  # None: the reset outran the answer
    answered = [e for e in endings if e.status == 431]
    assert answered, "no connection saw the 431"
    assert all(e.error_type == "header_too_large" for e in answered)
    assert watch.rss_max - rss_before < 32 * MiB
    assert rss_after - rss_before < 16 * MiB
    record(
        "limits_endless_headers",
        connections=len(endings),
        answered_431=len(answered),
        closed_within_s=round(max(e.open_s for e in endings), 2),
        header_cap_bytes=MAX_HEADER_BYTES,
        rss_before_mib=mib(rss_before),
        rss_during_max_mib=mib(watch.rss_max),
        rss_after_mib=mib(rss_after),
        **figures,
    )


def test_slowloris_connections_are_closed_by_the_header_deadline(server: Server) -> None:
    """150 connections trickle a header byte every 0.2 s: each gets 408 at the deadline while
    /healthz and generate keep answering; descriptors come back."""
    settle(server, server.open_fds())
    rss_before, fds_before = server.rss_bytes(), server.open_fds()
    timeouts_before = closed_by_limits(server, "header_timeout")
    count = 150

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        while True:
            for byte in b"X-Slow: loris\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)

    endings, watch = watched_attack(server, [trickle] * count, 4 * HEADER_TIMEOUT_S)
    figures = watch.assert_answered()
    settle(server, fds_before)
    rss_after = server.rss_bytes()
    assert all(e.closed_at is not None for e in endings), "a slowloris connection was held"
    assert all(e.status == 408 and e.error_type == "header_timeout" for e in endings)
    held_s = [e.open_s for e in endings]
    assert min(held_s) >= HEADER_TIMEOUT_S - 0.1
    assert max(held_s) <= HEADER_TIMEOUT_S + SWEEP_S + 1.5  # late only by a sweep and load
    assert server.open_fds() <= fds_before + 2
    assert closed_by_limits(server, "header_timeout") - timeouts_before == count
    record(
        "limits_slowloris",
        connections=count,
        answered_408=len(endings),
        held_s_min=round(min(held_s), 2),
        held_s_max=round(max(held_s), 2),
        header_timeout_s=HEADER_TIMEOUT_S,
        fds_before=fds_before,
        fds_during_max=watch.fds_max,
        fds_after=server.open_fds(),
        rss_before_mib=mib(rss_before),
        rss_during_max_mib=mib(watch.rss_max),
        rss_after_mib=mib(rss_after),
        **figures,
    )


def test_a_body_that_stops_short_or_never_comes_gets_408_then_close(server: Server) -> None:
    """A body that stops short and `Expect: 100-continue` followed by silence: 408 at the
    body deadline, then the connection is closed."""
    settle(server, server.open_fds())
    post = head(GENERATE, "POST", Content_Type="application/json", Content_Length="100")
    expect = head(GENERATE, "POST", Content_Length="100", Expect="100-continue")

    async def stops_short(writer: asyncio.StreamWriter) -> None:
        writer.write(post + b'{"seed": ')
        await writer.drain()

    async def silent_after_expect(writer: asyncio.StreamWriter) -> None:
        writer.write(expect)
        await writer.drain()

    async def run() -> list[Ending]:
        return list(
            await asyncio.gather(
                attack(server.port, stops_short, 4 * BODY_TIMEOUT_S),
                attack(server.port, silent_after_expect, 4 * BODY_TIMEOUT_S),
            )
        )

    short, silent = asyncio.run(run())
    for ending in (short, silent):
        assert ending.status == 408 and ending.error_type == "body_timeout", ending.data
        assert ending.closed_at is not None
        assert BODY_TIMEOUT_S - 0.1 <= ending.open_s <= BODY_TIMEOUT_S + SWEEP_S + 1.5
    assert silent.data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not warnings_in(server.log()), "a timed-out body left a warning or a traceback"
    record(
        "limits_body_deadline",
        stops_short_closed_s=round(short.open_s, 2),
        expect_then_silence_closed_s=round(silent.open_s, 2),
        body_timeout_s=BODY_TIMEOUT_S,
    )


def test_unfinished_large_bodies_are_dropped_and_memory_returns(server: Server) -> None:
    """100 connections each send 1,000,000 bytes of a 1 MiB body and stop: all get 408, the
    server keeps answering, and its memory goes back to where it was."""
    settle(server, server.open_fds())
    rss_before, fds_before = server.rss_bytes(), server.open_fds()
    count, length, sent = 100, 1_048_576, 1_000_000
    post = head(GENERATE, "POST", Content_Type="application/json", Content_Length=str(length))

    async def most_of_a_body(writer: asyncio.StreamWriter) -> None:
        writer.write(post)
        for _ in range(sent // 50_000):
            writer.write(b" " * 50_000)
            await writer.drain()

    endings, watch = watched_attack(server, [most_of_a_body] * count, 6 * BODY_TIMEOUT_S)
    figures = watch.assert_answered()
    settle(server, fds_before)
    rss_after = server.rss_bytes()
    assert all(e.status == 408 and e.error_type == "body_timeout" for e in endings)
    assert all(e.closed_at is not None for e in endings)
    assert watch.rss_max - rss_before > 30 * MiB, "the bodies never reached the server"
    assert rss_after - rss_before < 24 * MiB, "memory did not come back after the attack"
    record(
        "limits_unfinished_bodies",
        connections=count,
        body_bytes_sent_each=sent,
        answered_408=len(endings),
        rss_before_mib=mib(rss_before),
        rss_during_max_mib=mib(watch.rss_max),
        rss_after_mib=mib(rss_after),
        **figures,
    )


def test_a_connection_flood_beyond_the_cap_is_refused_at_once(server: Server) -> None:
    """400 silent connections against a cap of 256: those beyond the cap are answered 503 (or
    reset) at once; a connection opened before keeps being served; descriptors stay bounded;
    once the deadline clears the flood, new connections are served again."""
    settle(server, server.open_fds())
    rss_before, fds_before = server.rss_bytes(), server.open_fds()
    refusals_before = closed_by_limits(server, "too_many_connections")
    flood = 400

    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async def keep_using(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[int]:
        """/healthz and a generate, alternately, every 0.2 s on one kept-alive connection."""
        statuses = []
        stop_at = time.monotonic() + HEADER_TIMEOUT_S + 1
        index = 0
        while time.monotonic() < stop_at:
            if index % 2:
                writer.write(head(GENERATE, "POST", Content_Length="11") + b'{"seed": 7}')
            else:
                writer.write(head())
            await writer.drain()
            status_line = await reader.readuntil(b"\r\n\r\n")
            length = int(status_line.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            statuses.append(int(status_line.split(b" ", 2)[1]))
            index += 1
            await asyncio.sleep(0.2)
        return statuses

    async def run() -> tuple[list[Ending], list[int], int, Outcome]:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        user = asyncio.create_task(keep_using(reader, writer))
        await asyncio.sleep(0.1)
        # Listen for less than the header deadline: what closes now was refused at once.
        watch = Watch(server, probe=False)
        endings = await watch.during(
            asyncio.gather(
                *(attack(server.port, silent, HEADER_TIMEOUT_S / 2) for _ in range(flood))
            )
        )
        statuses = await user
        writer.close()
        await asyncio.sleep(HEADER_TIMEOUT_S + SWEEP_S)  # the flood's own deadline
        after = await request("GET", server.port, "/healthz", timeout_s=10)
        return list(endings), statuses, watch.fds_max, after

    endings, statuses, fds_during, after = asyncio.run(run())
    refused = [e for e in endings if e.closed_at is not None]
    held = flood - len(refused)
    assert held <= MAX_CONNECTIONS - 1  # the user's connection holds one place
    assert len(refused) >= flood - MAX_CONNECTIONS + 1
    assert all(e.status in (503, None) for e in refused)  # None: reset before the answer
    answered = [e for e in refused if e.status == 503]
    assert all(e.error_type == "too_many_connections" for e in answered)
    assert statuses and set(statuses) == {200}, statuses
    assert fds_before + MAX_CONNECTIONS / 2 <= fds_during <= fds_before + MAX_CONNECTIONS + 8
    assert after.status == 200
    assert closed_by_limits(server, "too_many_connections") - refusals_before == len(refused)
    settle(server, fds_before)
    record(
        "limits_connection_flood",
        flood=flood,
        cap=MAX_CONNECTIONS,
        held=held,
        refused=len(refused),
        refused_with_503=len(answered),
        refused_within_s=round(max(e.open_s for e in refused), 3),
        kept_alive_requests_200=len(statuses),
        fds_before=fds_before,
        fds_during_max=fds_during,
        fds_after=server.open_fds(),
        rss_before_mib=mib(rss_before),
        rss_after_mib=mib(server.rss_bytes()),
        new_connection_after=after.status,
    )


def test_idle_connections_are_closed(server: Server) -> None:
    """A kept-alive connection idle after its answer closes after the keep-alive timeout; one
    that connects and never sends anything closes at the header deadline, with no answer."""

    async def one_request(writer: asyncio.StreamWriter) -> None:
        writer.write(head())
        await writer.drain()

    async def nothing(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async def run() -> list[Ending]:
        return list(
            await asyncio.gather(
                attack(server.port, one_request, 4 * HEADER_TIMEOUT_S),
                attack(server.port, nothing, 4 * HEADER_TIMEOUT_S),
            )
        )

    kept_alive, silent = asyncio.run(run())
    assert kept_alive.status == 200 and kept_alive.closed_at is not None
    assert KEEP_ALIVE_TIMEOUT_S - 0.1 <= kept_alive.open_s <= KEEP_ALIVE_TIMEOUT_S + 1.5
    assert silent.data == b"" and silent.closed_at is not None
    assert HEADER_TIMEOUT_S - 0.1 <= silent.open_s <= HEADER_TIMEOUT_S + SWEEP_S + 1.5
    record(
        "limits_idle",
        keep_alive_closed_s=round(kept_alive.open_s, 2),
        keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S,
        silent_closed_s=round(silent.open_s, 2),
        header_timeout_s=HEADER_TIMEOUT_S,
    )
