"""Pure ASGI middleware: request metrics, the optional API key, and the body-size limit."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.auth import check_bearer
from service.errors import PayloadTooLarge, ServiceError, Unauthorized
from service.metrics import Metrics, method_label, protocol_label

OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/metrics",
        # The API's description and its offline viewers hold no data; the calls they make
        # from the page need the key like any other.
        "/openapi.json",
        "/docs",
        "/redoc",
    }
)
# The playground page and its assets hold no data; the key guards the API calls it makes.
OPEN_PREFIXES = ("/static/",)
PLAYGROUND_PATH = "/"


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path == PLAYGROUND_PATH or path.startswith(OPEN_PREFIXES)


class MetricsMiddleware:
    """Counts requests by route template, method and status, and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = method_label(scope["method"])
            self.metrics.process_requests.inc()
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.protocol_requests.labels(
                protocol=protocol_label(scope["path"]), status=str(status)
            ).inc()
            self.metrics.request_latency_seconds.labels(route=route, method=method).observe(
                time.perf_counter() - started
            )


async def _reject(
    error: ServiceError, metrics: Metrics, scope: Scope, receive: Receive, send: Send
) -> None:
    metrics.rejections.labels(reason=error.error_type).inc()
    await error_response(error)(scope, receive, send)


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` outside health, readiness and metrics."""

    def __init__(self, app: ASGIApp, api_key: str, metrics: Metrics) -> None:
        self.app = app
        self.expected = api_key.encode()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            check_bearer(dict(scope["headers"]).get(b"authorization"), self.expected)
        except Unauthorized as error:
            await _reject(error, self.metrics, scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """413 for bodies over `max_body_bytes`: at once by Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is over the limit of {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _reject(self._too_large(), self.metrics, scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Raised inside the route's body read, so the app's handler answers 413.
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)
