"""The model artifact contract: `models/<name>/model.json`, shared by the service and training.

This module is the only part of `service` that `training` imports, so it depends on
nothing but pydantic, numpy and the standard library.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CARD_FILENAME = "model.json"
ONNX_FILENAME = "model.onnx"
SAMPLES_FILENAME = "samples.png"
MAX_SEED = 2**63  # seeds are integers 0 <= seed < 2**63

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class ImageSpec(BaseModel):
    """Shape and value range of one generated image (the network's output is NHWC float32)."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, le=4096, description="Image height in pixels.")
    width: int = Field(gt=0, le=4096, description="Image width in pixels.")
    channels: Literal[1, 3, 4] = Field(description="1 grayscale, 3 RGB, 4 RGBA.")
    layout: Literal["NHWC"] = Field(default="NHWC", description="Output tensor layout.")
    output_range: tuple[float, float] = Field(
        description="[lo, hi] of the network's output, mapped linearly to uint8 0..255 "
        "(tanh generators: [-1, 1]; sigmoid decoders: [0, 1])."
    )

    @field_validator("output_range")
    @classmethod
    def _range_is_increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"output_range must be finite with lo < hi, got {list(value)}")
        return value


class OnnxInfo(BaseModel):
    """How the ONNX file was made, and the digest that ties the card to it."""

    model_config = ConfigDict(extra="allow")

    opset: int = Field(ge=13, description="ONNX opset of the graph.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of model.onnx, hex.")
    producers: dict[str, str] = Field(
        default_factory=dict, description="Versions of the tools that made the file."
    )


class Conditioning(BaseModel):
    """A class-conditional model's second input: class weights [batch, num_classes] float32
    (one-hot for one class, a mixture to blend), and the class names in index order."""

    model_config = ConfigDict(extra="forbid")

    input_name: str = Field(min_length=1, description="Name of the class-weight input.")
    classes: list[str] = Field(
        min_length=2, max_length=1000, description="Class names, in the input's index order."
    )

    @field_validator("classes")
    @classmethod
    def _names_unique(cls, value: list[str]) -> list[str]:
        folded = [name.casefold() for name in value]
        if any(not name.strip() for name in value):
            raise ValueError("class names must not be empty")
        if len(set(folded)) != len(folded):
            raise ValueError("class names must be unique (case-insensitively)")
        if any(name.isdigit() for name in folded) and folded != [str(i) for i in range(len(value))]:
            raise ValueError("a numeric class name must equal its index")
        return value

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ModelCard(BaseModel):
    """`model.json`: everything the service and a reader need to know about one model."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = Field(pattern=_NAME_PATTERN, description="URL-safe model name.")
    version: str = Field(min_length=1, max_length=64)
    kind: Literal["gan", "vae"]
    description: str = ""
    latent_dim: int = Field(gt=0, le=65536)
    input_name: str = Field(min_length=1)
    output_name: str = Field(min_length=1)
    image: ImageSpec
    dataset: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    onnx: OnnxInfo
    conditioning: Conditioning | None = Field(
        default=None, description="Present for class-conditional models only."
    )

    @model_validator(mode="after")
    def _names_differ(self) -> ModelCard:
        if self.input_name == self.output_name:
            raise ValueError("input_name and output_name must differ")
        if self.conditioning is not None and self.conditioning.input_name in (
            self.input_name,
            self.output_name,
        ):
            raise ValueError("conditioning.input_name must differ from input_name and output_name")
        return self

    @property
    def num_classes(self) -> int:
        """How many classes the model is conditioned on; 0 for an unconditional model."""
        return 0 if self.conditioning is None else self.conditioning.num_classes

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read and validate a card file (raises OSError or pydantic.ValidationError)."""
        return cls.model_validate_json(Path(path).read_bytes())

    def dump(self, path: Path) -> None:
        Path(path).write_text(
            self.model_dump_json(
                indent=2, exclude={"conditioning"} if self.conditioning is None else None
            )
            + "\n",
            encoding="utf-8",
        )


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def latent_for_seed(seed: int, latent_dim: int) -> np.ndarray:
    """The documented seed contract: the latent vector a seed stands for (float32)."""
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**63, got {seed}")
    return np.random.default_rng(seed).standard_normal(latent_dim, dtype=np.float32)


def to_uint8(images: np.ndarray, output_range: tuple[float, float]) -> np.ndarray:
    """Map network output in [lo, hi] linearly to uint8 0..255 (clipped, rounded)."""
    lo, hi = output_range
    scaled = (np.asarray(images, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    images_uint8: np.ndarray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return images_uint8


def class_for_seed(seed: int, num_classes: int) -> int:
    """The seed contract for conditional models: a seed without a class means this class."""
    return seed % num_classes


def class_weights(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot float32 class weights [len(classes), num_classes] for class indices."""
    weights = np.zeros((len(classes), num_classes), dtype=np.float32)
    weights[np.arange(len(classes)), np.asarray(classes, dtype=np.int64)] = 1.0
    return weights
