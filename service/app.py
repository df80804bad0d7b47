"""The application factory: `create_app(settings)` wires settings, metrics, models and routes.

Nothing is built at import time; the lifespan verifies, loads and warms every model before
the server accepts requests, and drains the queues on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from service import __version__
from service.api.errors import install_error_handlers
from service.api.fast import FastPath
from service.api.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware, MetricsMiddleware
from service.api.openapi import install_openapi
from service.api.routes import health, images, latents, models
from service.api.routes.docs import mount_docs
from service.api.routes.playground import mount_playground
from service.dataplane import DataPlane
from service.metrics import Metrics
from service.redaction import secret_redacted_in_logs
from service.runtime.providers import ProviderUnavailable
from service.runtime.registry import ModelLoadError
from service.settings import Settings
from service.v2 import grpc_port_to_serve
from service.v2.rest import V2Rest

logger = logging.getLogger(__name__)


class ImagegenApp(FastAPI):
    """FastAPI, with the hot single-image routes answered before its middleware and routing,
    and HEAD answered wherever GET is (RFC 9110 9.3.2)."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fast_path = self.fast_path
            route = fast_path.match(scope) if fast_path is not None else None
            if route is not None:
                assert fast_path is not None
                await fast_path.serve(scope, receive, send, route)
                return
            if scope["method"] == "HEAD":
                await super().__call__({**scope, "method": "GET"}, receive, _without_body(send))
                return
        elif scope["type"] == "lifespan":
            await super().__call__(scope, receive, self._plain_startup_failure(send))
            return
        await super().__call__(scope, receive, send)

    def _plain_startup_failure(self, send: Send) -> Send:
        """A lifespan send that reports a startup error the operator caused (an invalid model)
        as its message alone: Starlette sends the whole traceback, which the server prints."""

        async def send_plainly(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error is not None:
                message = {**message, "message": error}
            await send(message)

        return send_plainly


def _without_body(send: Send) -> Send:
    """A send that passes the GET answer's status and headers, and none of its body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return send_head


async def start_grpc(settings: Settings, dataplane: DataPlane, metrics: Metrics) -> Any:
    """The started gRPC server of the Open Inference Protocol, or None when it is off."""
    port = grpc_port_to_serve(settings)
    if port is None:
        return None
    from service.v2.grpc_server import GrpcServer  # grpcio is an optional extra

    server = GrpcServer(settings, dataplane, metrics)
    await server.start()
    return server


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app with its own metrics registry and models (loaded when its lifespan starts)."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    dataplane = DataPlane(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        with secret_redacted_in_logs(key):
            grpc_server = await start_grpc(settings, dataplane, metrics)
            if grpc_server is not None:
                app.state.on_exit_signal = lambda: grpc_server.stop_soon(settings.shutdown_grace_s)
            try:
                try:
                    await dataplane.start()
                except (ModelLoadError, ProviderUnavailable) as error:
                    app.state.startup_error = str(error)
                    raise
                yield
            finally:
                logger.info(
                    "draining: finishing queued work within %g s", settings.shutdown_grace_s
                )
                if grpc_server is not None:
                    await grpc_server.stop(settings.shutdown_grace_s)
                await dataplane.stop(settings.shutdown_grace_s)
                logger.info("stopped")

    app = ImagegenApp(
        title="imagegen",
        version=__version__,
        summary="Images from ONNX GAN and VAE models, with dynamic batching.",
        lifespan=lifespan,
        docs_url=None,  # mount_docs serves /docs and /redoc from the package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    install_error_handlers(app)
    install_openapi(app, api_key_required=settings.api_key is not None)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(images.router)
    app.include_router(latents.router)
    mount_playground(app)
    mount_docs(app)
    # The hot routes are answered before FastAPI's stack; their declared routes (OpenAPI, and
    # any request that still reaches the router) answer through the same handlers.
    app.state.fast_path = app.fast_path = FastPath(
        dataplane, metrics, more_routes=V2Rest(dataplane).match
    )
    # The last added middleware runs first: metrics see every answer, then the key, then size.
    app.add_middleware(
        BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics
    )
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware, api_key=settings.api_key.get_secret_value(), metrics=metrics
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
