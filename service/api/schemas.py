"""Wire models of the HTTP API: request bodies and JSON responses."""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.interpolation import Method
from service.runtime.card import MAX_SEED

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_SCALE = 16


def _finite_float32(values: list[float]) -> list[float]:
    for index, value in enumerate(values):
        if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise ValueError(f"value {value!r} at index {index} is not a finite float32")
    return values


Seed = Annotated[
    int,
    Field(strict=True, ge=0, lt=MAX_SEED, description="0 <= seed < 2**63.", examples=[7]),
]
# Strict numbers: "0.5" strings and booleans are refused, as the schema says.
StrictFloat = Annotated[float, Field(strict=True)]

Latent = Annotated[
    list[StrictFloat],
    Field(
        min_length=1,
        max_length=65536,
        description="latent_dim finite float32 values.",
        json_schema_extra={
            "items": {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
        },
    ),
    AfterValidator(_finite_float32),
]
Truncation = Annotated[
    float,
    Field(
        strict=True, gt=0, le=1, description="Multiplies the latent; 0 < t <= 1 (1 = unchanged)."
    ),
]
ClassRef = Annotated[
    Annotated[int, Field(strict=True)] | Annotated[str, Field(min_length=1, max_length=200)],
    Field(
        description="Class-conditional models only: a class name (case-insensitive) or its "
        "index, as listed by GET /v1/models/{model}. Without it, seed s means class "
        "s % num_classes; a latent needs one. Unconditional models answer 422.",
        examples=["Sneaker"],
    ),
]
Scale = Annotated[
    int,
    Field(strict=True, ge=1, le=MAX_SCALE, description="Nearest-neighbour upscaling factor."),
]


class GenerateRequest(BaseModel):
    """One image: from `seed`, from `latent`, or from a random seed when both are absent."""

    model_config = ConfigDict(extra="forbid")

    seed: Seed | None = None
    latent: Latent | None = None
    class_: ClassRef | None = Field(default=None, alias="class")
    truncation: Truncation = 1.0
    scale: Scale = 1

    @model_validator(mode="after")
    def _seed_or_latent(self) -> GenerateRequest:
        if self.seed is not None and self.latent is not None:
            raise ValueError("give either seed or latent, not both")
        return self


class BatchRequest(BaseModel):
    """Many images: exactly one of `seeds`, `latents`, or `count` (seeds `seed`..`seed+count-1`)."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[Seed] | None = Field(default=None, min_length=1)
    latents: list[Latent] | None = Field(default=None, min_length=1)
    count: int | None = Field(default=None, strict=True, ge=1)
    seed: Seed | None = Field(
        default=None, description="First seed with `count`; random if absent."
    )
    classes: list[ClassRef] | None = Field(
        default=None,
        min_length=1,
        description="Class-conditional models: one class per image (name or index).",
    )
    class_: ClassRef | None = Field(
        default=None, alias="class", description="Class-conditional models: one class for all."
    )
    truncation: Truncation = 1.0
    scale: Scale = 1
    columns: int | None = Field(
        default=None, strict=True, ge=1, description="Grid columns for image/png responses."
    )

    @model_validator(mode="after")
    def _one_source(self) -> BatchRequest:
        given = [name for name in ("seeds", "latents", "count") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of seeds, latents or count"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.seed is not None and self.count is None:
            raise ValueError("seed goes with count; use seeds for a list")
        if self.count is not None and self.seed is not None and self.seed + self.count > MAX_SEED:
            raise ValueError("seed + count - 1 must stay below 2**63")
        if self.classes is not None and self.class_ is not None:
            raise ValueError("give either classes (one per image) or class (for all), not both")
        if self.classes is not None and len(self.classes) != self.item_count:
            raise ValueError(
                f"classes has {len(self.classes)} entries for {self.item_count} images"
            )
        return self

    @property
    def item_count(self) -> int:
        if self.seeds is not None:
            return len(self.seeds)
        if self.latents is not None:
            return len(self.latents)
        return self.count or 0


class GenerateResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    model: str
    version: str
    seed: int | None = Field(description="The seed, or null when a latent was given.")
    class_: str | None = Field(
        default=None,
        alias="class",
        description="Class-conditional models only (absent otherwise): the image's class.",
    )
    width: int = Field(description="Image width in pixels, after scaling.")
    height: int = Field(description="Image height in pixels, after scaling.")
    truncation: float
    scale: int
    png_base64: str


class BatchImage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    seed: int | None
    class_: str | None = Field(
        default=None, alias="class", description="Conditional models: the image's class."
    )
    png_base64: str


class BatchResponse(BaseModel):
    model: str
    version: str
    width: int
    height: int
    images: list[BatchImage]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    kind: str
    description: str
    latent_dim: int
    image: dict[str, Any]
    dataset: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    onnx: dict[str, Any]
    providers: list[str] = Field(description="onnxruntime execution providers in use.")


class ImageShape(BaseModel):
    height: int = Field(description="Image height in pixels (before scaling).")
    width: int = Field(description="Image width in pixels (before scaling).")
    channels: int = Field(description="1 grayscale, 3 RGB, 4 RGBA.")


class DatasetName(BaseModel):
    name: str | None = Field(description="The data set it was trained on, when the card says.")


class ModelSummary(BaseModel):
    """One line of the model list; `GET /v1/models/{model}` has the whole card."""

    name: str
    kind: str = Field(description="'gan' (generator) or 'vae' (decoder).")
    version: str
    description: str
    latent_dim: int = Field(description="Length of a latent vector (float32 values).")
    image: ImageShape
    dataset: DatasetName
    metrics: dict[str, float] = Field(
        description="Headline quality of the served file (frechet_distance, precision, recall, "
        "where the card has them); the whole report is at /v1/models/{model}."
    )
    providers: list[str] = Field(description="onnxruntime execution providers in use.")
    ready: bool = Field(description="Whether the model takes requests now.")
    classes: list[str] | None = Field(
        default=None,
        description="Class-conditional models: the class names in index order (absent "
        "for unconditional models).",
    )


class ModelList(BaseModel):
    models: list[ModelSummary]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: list[str]


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- latent space: a seed's latent, interpolation ------------------------------------------

MAX_INTERPOLATION_STEPS = 64


class SeedLatent(BaseModel):
    model: str
    seed: int
    latent_dim: int
    latent: list[float] = Field(description="The seed's latent (float32 values), as in section 3.")


class LatentPoint(BaseModel):
    """One end of an interpolation: exactly one of `seed` or `latent`."""

    model_config = ConfigDict(extra="forbid")

    seed: Seed | None = None
    latent: Latent | None = None
    class_: ClassRef | None = Field(default=None, alias="class")

    @model_validator(mode="after")
    def _seed_or_latent(self) -> LatentPoint:
        if (self.seed is None) == (self.latent is None):
            raise ValueError("give exactly one of seed or latent")
        return self


class InterpolateRequest(BaseModel):
    """Frames along a path in latent space from `start` to `end` (both ends included)."""

    model_config = ConfigDict(extra="forbid")

    start: LatentPoint
    end: LatentPoint
    steps: int = Field(
        default=8,
        strict=True,
        ge=2,
        le=MAX_INTERPOLATION_STEPS,
        description="Frames, including start and end.",
    )
    method: Method = Field(
        default="slerp", description="slerp: along the great circle (default); lerp: straight."
    )
    truncation: Truncation = 1.0
    scale: Scale = 1
    columns: int | None = Field(
        default=None, strict=True, ge=1, description="Strip (image/png) columns; default one row."
    )
    frame_duration_ms: int = Field(
        default=100, strict=True, ge=20, le=10_000, description="GIF time per frame (ms)."
    )
    bounce: bool = Field(default=True, description="GIF plays forward then back (ping-pong).")


class InterpolationFrame(BaseModel):
    index: int
    t: float = Field(description="Position on the path: 0 = start, 1 = end.")
    png_base64: str


class InterpolateResponse(BaseModel):
    model: str
    version: str
    method: str
    steps: int
    width: int
    height: int
    truncation: float
    scale: int
    start_seed: int | None = Field(description="The start's seed, or null for a latent.")
    end_seed: int | None = Field(description="The end's seed, or null for a latent.")
    start_class: str | None = Field(
        default=None, description="Class-conditional models only: the start's class."
    )
    end_class: str | None = Field(
        default=None, description="Class-conditional models only: the end's class."
    )
    frames: list[InterpolationFrame]
