"""Descriptions of the served models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import DataPlaneDep, KnownModelDep
from service.api.schemas import (
    DatasetName,
    ErrorResponse,
    ImageShape,
    ModelInfo,
    ModelList,
    ModelSummary,
)
from service.dataplane import DataPlane, ServedModel

router = APIRouter(prefix="/v1/models", tags=["models"])


HEADLINE_METRICS = ("frechet_distance", "precision", "recall")


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """FD, precision and recall from a card's quality report, where it has them."""
    generated = metrics.get("quality", {}).get("generated", {})
    if not isinstance(generated, dict):
        return {}
    return {
        key: float(generated[key])
        for key in HEADLINE_METRICS
        if isinstance(generated.get(key), int | float)
    }


def summary(served: ServedModel, dataplane: DataPlane) -> ModelSummary:
    card = served.card
    return ModelSummary(
        name=card.name,
        kind=card.kind,
        version=card.version,
        description=card.description,
        latent_dim=card.latent_dim,
        image=ImageShape(
            height=card.image.height, width=card.image.width, channels=card.image.channels
        ),
        dataset=DatasetName(name=card.dataset.get("name")),
        metrics=headline_metrics(card.metrics),
        providers=served.providers,
        ready=dataplane.ready,
        **({"classes": served.classes} if served.num_classes else {}),
    )


@router.get("", response_model=ModelList, response_model_exclude_unset=True)
async def list_models(dataplane: DataPlaneDep) -> ModelList:
    """Every served model in a few lines: kind, version, latent size, image shape, data set name,
    headline quality, providers, readiness. Training, the whole quality report and ONNX details:
    `/v1/models/{model}`."""
    return ModelList(
        models=[summary(dataplane.models[name], dataplane) for name in sorted(dataplane.models)]
    )


@router.get("/{model}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def describe_model(served: KnownModelDep) -> ModelInfo:
    """One model's card and the execution providers it runs on."""
    return ModelInfo(**served.info())
