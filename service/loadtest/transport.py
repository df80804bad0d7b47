"""A lean HTTP/1.1 keep-alive transport for httpx, so that the load generator stays cheap.

httpx's default transport (httpcore over anyio, h11 parsing) costs about a millisecond of CPU
per request; on a machine the tool shares with the server that is more than the server's own
work. This transport speaks just enough HTTP/1.1 over asyncio protocols: request bytes built
in one join, responses framed by Content-Length or chunked encoding, connections kept alive
in a pool capped at `max_connections`. The client code keeps httpx's API (and its Request and
Response types); errors are httpx's (`ConnectError`, `ReadError`, `ReadTimeout`, ...).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

import httpx

MAX_HEADER_BYTES = 64 * 1024


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.reused = False
        self.expired = False
        self.error: BaseException | None = None

    def expire(self) -> None:
        """The read timeout passed: the waiting reader raises ReadTimeout."""
        self.expired = True
        self._wake()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self.closed = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading -----------------------------------------------------------------------------

    async def _more(self) -> None:
        """Wait for more bytes; ReadError when the peer closed first, ReadTimeout if late."""
        if self.closed:
            raise httpx.ReadError("the server closed the connection")
        await self._wait()

    async def _wait(self) -> None:
        if self.expired:
            raise httpx.ReadTimeout("no response within the read timeout")
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
        if self.expired:
            raise httpx.ReadTimeout("no response within the read timeout")

    async def read_response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        """Status, headers, body and whether the connection may be reused."""
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise httpx.RemoteProtocolError("response headers too large")
            await self._more()
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}") from None
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        keep_alive = status_line[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lowered == b"connection":
                keep_alive = value.lower() == b"keep-alive" or (
                    keep_alive and value.lower() != b"close"
                )
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            while len(buffer) < length:
                await self._more()
            body = bytes(buffer[:length])
            del buffer[:length]
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # framed by the connection's end
            while not self.closed:
                await self._more_or_eof()
            body = bytes(buffer)
            buffer.clear()
            keep_alive = False
        return status, headers, body, keep_alive and not self.closed

    async def _more_or_eof(self) -> None:
        if not self.closed:
            await self._wait()

    async def _read_chunked(self) -> bytes:
        buffer = self.buffer
        parts: list[bytes] = []
        while True:
            while (line_end := buffer.find(b"\r\n")) < 0:
                await self._more()
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            del buffer[: line_end + 2]
            if size == 0:
                while (trailer_end := buffer.find(b"\r\n")) != 0:
                    if trailer_end > 0:  # a trailer field: skip it
                        del buffer[: trailer_end + 2]
                        continue
                    await self._more()
                del buffer[:2]
                return b"".join(parts)
            while len(buffer) < size + 2:
                await self._more()
            parts.append(bytes(buffer[:size]))
            del buffer[: size + 2]

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 (no TLS) with a keep-alive pool of at most `max_connections` per host."""

    def __init__(self, max_connections: int = 100) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self._idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"the lean transport speaks plain http, not {url.scheme}"
            )
        timeouts = request.extensions.get("timeout", {})
        status, headers, content = await self.exchange(
            (url.host, url.port or 80),
            self._serialize(request, request.content),
            connect_timeout_s=timeouts.get("connect"),
            read_timeout_s=timeouts.get("read"),
        )
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def exchange(
        self,
        key: tuple[str, int],
        payload: bytes,
        *,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send a serialized request to `key` (host, port); its status, headers and body.

        The load generator's hot path: no httpx Request or Response objects are built.
        """
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.max_connections)
        async with slots:
            for attempt in (0, 1):
                connection = await self._checkout(key, connect_timeout_s)
                assert connection.transport is not None
                connection.transport.write(payload)
                timer = None
                if read_timeout_s is not None:
                    # A timer, not asyncio.wait_for: that would cost a task per request.
                    timer = asyncio.get_running_loop().call_later(read_timeout_s, connection.expire)
                try:
                    status, headers, content, reusable = await connection.read_response()
                except httpx.ReadError:
                    self._discard(connection)
                    # A kept-alive connection the server had closed: try once on a new one.
                    if connection.reused and not connection.buffer and attempt == 0:
                        continue
                    raise
                except BaseException:  # ReadTimeout, protocol errors, cancellation
                    self._discard(connection)
                    raise
                finally:
                    if timer is not None:
                        timer.cancel()
                if reusable:
                    connection.reused = True
                    self._idle.setdefault(key, collections.deque()).append(connection)
                else:
                    self._discard(connection)
                return status, headers, content
        raise AssertionError("unreachable")  # pragma: no cover

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    @staticmethod
    def _serialize(request: httpx.Request, body: bytes) -> bytes:
        target = request.url.raw_path
        lines: Iterable[bytes] = (
            b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw
        )
        has_length = "content-length" in request.headers
        length = b"" if has_length or not body else b"content-length: %d\r\n" % len(body)
        return b"".join(
            (request.method.encode(), b" ", target, b" HTTP/1.1\r\n", *lines, length, b"\r\n", body)
        )

    async def _checkout(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, key[0], key[1]), timeout
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {key[0]}:{key[1]} in time") from None
        except OSError as error:
            raise httpx.ConnectError(f"{error.strerror or error} ({key[0]}:{key[1]})") from None
        self._open.add(connection)
        return connection

    async def aclose(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
