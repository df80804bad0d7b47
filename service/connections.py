"""Connection limits of the HTTP server: uvicorn's httptools protocol with a header-size cap,
deadlines for a request's head and body, and a cap on open connections.

httptools has none of these: a header that never ends grows inside the parser without bound,
and a connection that trickles its head or stops half-way through its body is waited on
forever. `limited_protocol(...)` returns a subclass of uvicorn's `HttpToolsProtocol` (given to
`uvicorn.Config(http=...)`) that adds them at the cost of a few attribute writes per request:

- the request line and headers may take `max_header_bytes`; beyond it, 431 and close;
- the head must arrive within `header_timeout_s` of its first byte (or of the connection
  being made), and the body within `body_timeout_s` of the head; 408 after, then close.
  Instead of a timer per request, one sweep per server looks at every connection a few
  times a second (a deadline fires up to a quarter of its length late);
- beyond `max_connections` open connections, a new one gets 503 and is closed at once, so
  descriptors and memory stay bounded whatever a flood does.

- a kept-alive connection idle for `keep_alive_timeout_s` after its answer is closed, by the
  same sweep (uvicorn arms and cancels a timer per request for this instead).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import http
import logging
import resource
from collections.abc import Callable, Collection
from dataclasses import dataclass
from time import monotonic
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.disconnect import CONNECTION_WATCH, ConnectionWatch
from service.errors import RETRY_AFTER_S, error_json

logger = logging.getLogger(__name__)

# Where a connection is in its current request. _HEAD and _BODY have a deadline, and _IDLE
# (answered, nothing pipelined, the next head not begun) the keep-alive timeout; _BETWEEN (the
# app is running) has the request deadline of the app.
# _LINGER: answered 408 or 431 and half-closed; what the client still sends is read and dropped.
_HEAD, _BODY, _BETWEEN, _LINGER, _IDLE = 0, 1, 2, 3, 4

# After a 408 or 431 the connection stays half-open this long (seconds), reading and dropping
# what the client still sends: closing with unread data would reset the connection, and the
# client, still sending, would lose the answer (nginx's lingering close does the same).
LINGER_S = 2.0

# Descriptors a server process needs besides its connections (models, logs, the loop, gRPC).
_RESERVED_DESCRIPTORS = 256
# After a burst of at least _TRIM_AFTER_PEAK connections, freed memory goes back to the OS once
# at most _TRIM_AT connections are open (glibc keeps freed heap otherwise, so the process would
# stay at the burst's peak).
_TRIM_AFTER_PEAK = 64
_TRIM_AT = 8


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float = 5.0


def _close_response(status: int, error_type: str, message: str, *extra: bytes) -> bytes:
    """A whole HTTP/1.1 response in the v1 error shape that ends the connection."""
    body = error_json(error_type, message)
    head = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _OneSend:
    """The transport a request's cycle writes to: it holds the response head until the first
    body write and sends both at once, so a small answer leaves in one send (uvicorn writes the
    head and the body separately: two system calls, two segments for the client to read).

    The head is the first write that is not `100 Continue`; HEAD answers have no body write,
    so for them it is not held. Everything else passes through to the real transport."""

    __slots__ = ("_head", "_hold", "_transport")

    def __init__(self, transport: asyncio.Transport, hold: bool) -> None:
        self._transport = transport
        self._hold = hold
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
        elif self._hold and data[9:12] != b"100":
            self._hold = False
            self._head = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `limits` (set by `limited_protocol`)."""

    limits: ClassVar[ConnectionLimits]
    too_many: ClassVar[bytes]
    header_too_large: ClassVar[bytes]
    header_timeout: ClassVar[bytes]
    body_timeout: ClassVar[bytes]
    sweeper: ClassVar[_Sweeper | None] = None

    # Slots, not instance attributes: next to uvicorn's 30-odd attributes in the __dict__ they
    # made a whole request 2.6 us slower (benchmarks/protocol_cost.py); as slots, nothing.
    __slots__ = ("_head_room", "_phase", "_phase_started", "_watch")
    _phase: int
    _phase_started: float  # monotonic time the current head or body began
    _head_room: int  # bytes the current request's head may still take
    _watch: ConnectionWatch  # tells the request in flight that the peer went away

    @staticmethod
    def on_limit(reason: str) -> None:
        """Called for every connection a limit refuses or closes (set by `limited_protocol`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # Refused before it costs anything: not counted, no parser state, no deadline.
            self.transport = transport
            self._phase = _BETWEEN
            self._phase_started = 0.0
            self._head_room = 0
            self._watch = ConnectionWatch()
            transport.write(self.too_many)
            transport.close()
            self.on_limit("too_many_connections")
            return
        super().connection_made(transport)
        self._phase = _HEAD
        self._phase_started = monotonic()
        self._head_room = self.limits.max_header_bytes
        self._watch = ConnectionWatch()
        sweeper = type(self).sweeper
        if sweeper is None or sweeper.loop is not self.loop:
            type(self).sweeper = _Sweeper(self.loop, self.connections, self.limits)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            HttpToolsProtocol.data_received(self, data)
            return
        if phase in (
            _BETWEEN,
            _IDLE,
        ):  # the first bytes of the next request: its head's clock starts
            self._phase = _HEAD
            self._phase_started = monotonic()
            self._head_room = self.limits.max_header_bytes
        elif phase == _LINGER:
            return
        room = self._head_room
        if len(data) <= room:
            self._head_room = room - len(data)
            HttpToolsProtocol.data_received(self, data)
            return
        # More than the head may take: parse what fits; if the head ended within it, the rest
        # is body (or the next request), else the head is too large.
        self._head_room = 0
        HttpToolsProtocol.data_received(self, data[:room])
        if self.transport.is_closing():
            return
        if self._phase == _HEAD:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # A pipelined head while an answer is still going out: no room for a 431.
                self.transport.close()
                self.on_limit("header_too_large")
            else:
                self._refuse(self.header_too_large, "header_too_large")
            return
        HttpToolsProtocol.data_received(self, data[room:])

    def connection_lost(self, exc: Exception | None) -> None:
        HttpToolsProtocol.connection_lost(self, exc)
        self._watch.connection_lost()

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._phase_started = monotonic()
        self.scope[CONNECTION_WATCH] = self._watch  # type: ignore[literal-required]
        # The new cycle gets a _OneSend around the transport (uvicorn passes self.transport).
        transport = self.transport
        self.transport = _OneSend(transport, self.parser.get_method() != b"HEAD")  # type: ignore[assignment]
        try:
            HttpToolsProtocol.on_headers_complete(self)
        finally:
            self.transport = transport

    def on_message_complete(self) -> None:
        self._phase = _BETWEEN
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        # uvicorn's, except that instead of arming a keep-alive timer (a call_later per
        # response, cancelled by the next request's first bytes) the connection turns _IDLE
        # and the sweep closes it once idle for the keep-alive timeout.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _BETWEEN:
            self._phase = _IDLE
            self._phase_started = monotonic()

    def expire(self, now: float) -> None:
        """Called by the sweep: close the connection if its head or body is overdue."""
        phase = self._phase
        if phase == _IDLE:
            if now - self._phase_started >= self.limits.keep_alive_timeout_s:
                self.transport.close()
        elif phase == _LINGER:
            if now - self._phase_started >= LINGER_S:
                self.transport.close()
        elif phase == _HEAD:
            if now - self._phase_started < self.limits.header_timeout_s:
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self.transport.close()  # a pipelined head stalled while a response is going out
            elif self._head_room == self.limits.max_header_bytes:
                self.transport.close()  # connected and never said anything: nothing to answer
            else:
                self._refuse(self.header_timeout, "header_timeout")
        elif phase == _BODY:
            if now - self._phase_started < self.limits.body_timeout_s:
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self.transport.close()  # answered early (401, 413) and the rest never came
            elif cycle.response_started:
                cycle.keep_alive = False  # let the answer finish, then close
                self._phase = _BETWEEN
            else:
                # The app waits in receive(): it sees a disconnect and its sends are dropped.
                cycle.disconnected = True
                cycle.message_event.set()
                self._refuse(self.body_timeout, "body_timeout")

    def _refuse(self, response: bytes, reason: str) -> None:
        """Send `response`, then half-close and linger (see LINGER_S)."""
        self._phase = _LINGER
        self._phase_started = monotonic()
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
        self.on_limit(reason)


class _Sweeper:
    """Checks every connection's deadline a few times a second, on the event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: Collection[object],
        limits: ConnectionLimits,
    ) -> None:
        self.loop = loop
        self.connections = connections
        shortest_s = min(
            limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_timeout_s
        )
        self.interval_s = min(1.0, max(0.05, shortest_s / 4))
        self.peak_connections = 0
        loop.call_later(self.interval_s, self.sweep)

    def sweep(self) -> None:
        now = monotonic()
        for connection in list(self.connections):
            if isinstance(connection, LimitedHttpToolsProtocol):
                connection.expire(now)
        count = len(self.connections)
        if count > self.peak_connections:
            self.peak_connections = count
        elif self.peak_connections >= _TRIM_AFTER_PEAK and count <= _TRIM_AT:
            self.peak_connections = count
            release_free_memory()
        self.loop.call_later(self.interval_s, self.sweep)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None  # not glibc
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc only; elsewhere nothing)."""
    if _TRIM is not None:
        _TRIM(0)


def limited_protocol(
    limits: ConnectionLimits, on_limit: Callable[[str], None]
) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`; `on_limit(reason)` is called for
    every connection a limit closes (reason: the error type sent)."""
    header_kib = limits.max_header_bytes / 1024

    class Limited(LimitedHttpToolsProtocol):
        pass

    Limited.limits = limits
    Limited.on_limit = staticmethod(on_limit)  # type: ignore[method-assign,assignment]
    Limited.too_many = _close_response(
        503,
        "too_many_connections",
        f"the server holds its limit of {limits.max_connections} connections; retry later",
        f"retry-after: {RETRY_AFTER_S}".encode(),
    )
    Limited.header_too_large = _close_response(
        431,
        "header_too_large",
        f"the request line and headers are over the limit of {limits.max_header_bytes} bytes "
        f"({header_kib:g} KiB)",
    )
    Limited.header_timeout = _close_response(
        408,
        "header_timeout",
        f"the request line and headers did not arrive within {limits.header_timeout_s:g} s",
    )
    Limited.body_timeout = _close_response(
        408,
        "body_timeout",
        f"the request body did not arrive within {limits.body_timeout_s:g} s of its headers",
    )
    return Limited


def ensure_descriptors(max_connections: int) -> None:
    """Raise this process's open-file limit so `max_connections` fit below it; warn if the
    hard limit does not allow it (the connection cap would then not protect descriptors)."""
    needed = max_connections + _RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            logger.warning(
                "open-file limit %d is below max_connections + %d = %d: lower max_connections "
                "or raise the limit (ulimit -n)",
                target,
                _RESERVED_DESCRIPTORS,
                needed,
            )
