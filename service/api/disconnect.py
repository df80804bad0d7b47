"""Stop waiting for images when the client goes away, so its queued items never cost compute."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from service.errors import ClientClosedRequest

T = TypeVar("T")


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` in this task; if the client disconnects first, cancel it (the batcher then
    drops its queued items) and raise ClientClosedRequest.

    Call only after the body was read: the next ASGI message is then the disconnect. One
    watcher task per request, and `work` runs in the caller's own task (no second task).
    """
    current = asyncio.current_task()
    assert current is not None, "call from a task"
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        current.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        uncancel = getattr(current, "uncancel", None)  # Python 3.11+
        if uncancel is not None:
            uncancel()
        raise ClientClosedRequest("the client closed the connection") from None
    finally:
        # Not awaited: it is parked in receive(), and the cancellation ends it at the next turn.
        watcher.cancel()
