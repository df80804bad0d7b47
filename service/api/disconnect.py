"""Stop waiting for images when the client goes away, so its queued items never cost compute."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from starlette.types import Receive, Scope

from service.errors import ClientClosedRequest

T = TypeVar("T")

# The scope key under which the server's protocol (service.connections) puts the request's
# ConnectionWatch. Servers without it (tests' in-process transports, other ASGI servers) get a
# watcher task that reads the disconnect instead.
CONNECTION_WATCH = "imagegen.connection_watch"


class ConnectionWatch:
    """One per connection, set by the HTTP protocol in each request's scope: the protocol calls
    `connection_lost()` when the peer goes away, which calls what the request in flight asked
    for. Costs nothing per request (no task, no receive() future), unlike a watcher task."""

    __slots__ = ("_on_lost", "lost")

    def __init__(self) -> None:
        self.lost = False
        self._on_lost: Any = None

    def connection_lost(self) -> None:
        self.lost = True
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost()


async def _watch_receive(receive: Receive, watch: ConnectionWatch) -> None:
    """The fallback: read ASGI messages until the disconnect, then tell `watch`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    watch.connection_lost()


async def cancel_on_disconnect(
    receive: Receive, work: Awaitable[T], scope: Scope | None = None
) -> T:
    """Await `work` in this task; if the client disconnects first, cancel it (the batcher then
    drops its queued items) and raise ClientClosedRequest.

    Call only after the body was read: the next ASGI message is then the disconnect. With the
    server's ConnectionWatch in `scope` the protocol cancels the task itself; otherwise one
    watcher task per request reads the disconnect. `work` runs in the caller's own task.
    """
    current = asyncio.current_task()
    assert current is not None, "call from a task"
    watch: ConnectionWatch | None = None if scope is None else scope.get(CONNECTION_WATCH)
    watcher = None
    if watch is None:
        watch = ConnectionWatch()
        watcher = asyncio.get_running_loop().create_task(_watch_receive(receive, watch))
    elif watch.lost:
        if isinstance(work, Coroutine):
            work.close()  # never started: nothing queued
        raise ClientClosedRequest("the client closed the connection")
    watch._on_lost = current.cancel
    try:
        return await work
    except asyncio.CancelledError:
        if not watch.lost:
            raise
        uncancel = getattr(current, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        raise ClientClosedRequest("the client closed the connection") from None
    finally:
        watch._on_lost = None
        if watcher is not None:
            # Not awaited: it is parked in receive(), and the cancellation ends it next turn.
            watcher.cancel()
