"""Liveness, readiness and the Prometheus scrape endpoint; always open, never behind the key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.deps import DataPlaneDep
from service.api.schemas import ErrorResponse, Health, Readiness
from service.dataplane import Phase
from service.errors import NotReady, ShuttingDown
from service.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
@router.get("/v2/health/live", response_model=Health, include_in_schema=False)
async def live() -> Health:
    """Liveness: the process answers HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}})
@router.get("/v2/health/ready", response_model=Readiness, include_in_schema=False)
async def ready(dataplane: DataPlaneDep) -> Readiness:
    """Readiness: 200 only when every model is loaded and warmed up and the service not draining."""
    if dataplane.phase is Phase.DRAINING or dataplane.phase is Phase.STOPPED:
        raise ShuttingDown("the service is shutting down")
    restarting = dataplane.unhealthy_models()
    if restarting:
        raise NotReady(f"restarting the batch scheduler of {', '.join(restarting)}")
    if not dataplane.ready:
        raise NotReady("models are not loaded yet")
    return Readiness(status="ready", models=sorted(dataplane.models))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render()
    return Response(content=body, media_type=content_type)
