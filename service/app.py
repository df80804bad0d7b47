"""The application factory: `create_app(settings)` wires settings, metrics, models and routes.

Nothing is built at import time; the lifespan verifies, loads and warms every model before
the server accepts requests, and drains the queues on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware, MetricsMiddleware
from service.api.openapi import install_openapi
from service.api.routes import health, images, latents, models
from service.api.routes.docs import mount_docs
from service.api.routes.playground import mount_playground
from service.dataplane import DataPlane
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.redaction import secret_redacted_in_logs
from service.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app with its own metrics registry and models (loaded when its lifespan starts)."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()
    dataplane = DataPlane(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        with secret_redacted_in_logs(key):
            await dataplane.start()
            try:
                yield
            finally:
                logger.info(
                    "draining: finishing queued work within %g s", settings.shutdown_grace_s
                )
                await dataplane.stop(settings.shutdown_grace_s)
                logger.info("stopped")

    app = FastAPI(
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
