"""Descriptions of the served models."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import DataPlaneDep, KnownModelDep
from service.api.schemas import ErrorResponse, ModelInfo, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList)
async def list_models(dataplane: DataPlaneDep) -> ModelList:
    """Every served model: kind, version, latent size, image shape, data, quality, providers."""
    return ModelList(
        models=[ModelInfo(**dataplane.models[name].info()) for name in sorted(dataplane.models)]
    )


@router.get("/{model}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def describe_model(served: KnownModelDep) -> ModelInfo:
    """One model's card and the execution providers it runs on."""
    return ModelInfo(**served.info())
