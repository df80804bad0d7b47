"""Helpers shared by the service tests: PNG decoding, expected images, holding a model busy."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

from service.dataplane import DataPlane, ServedModel
from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, ModelCard, latent_for_seed, to_uint8

PATIENCE_S = 10.0


def decode_png(png: bytes) -> np.ndarray:
    """Pixels as `[H, W, C]` uint8 (grayscale gets its channel axis back)."""
    pixels = np.asarray(Image.open(io.BytesIO(png)))
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def reference_images(
    model_dir: Path, latents: np.ndarray, class_weights: np.ndarray | None = None
) -> np.ndarray:
    """What the model should produce, computed straight from onnxruntime one row at a time
    (a conditional model's class weights `[n, num_classes]` beside the latents)."""
    card = ModelCard.load(model_dir / CARD_FILENAME)
    session = ort.InferenceSession(
        str(model_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"]
    )

    def feed(i: int) -> dict[str, np.ndarray]:
        inputs = {card.input_name: latents[i : i + 1]}
        if card.conditioning is not None:
            assert class_weights is not None, "a conditional model needs class weights"
            inputs[card.conditioning.input_name] = class_weights[i : i + 1].astype(np.float32)
        return inputs

    rows = [session.run([card.output_name], feed(i))[0] for i in range(latents.shape[0])]
    return to_uint8(np.concatenate(rows), card.image.output_range)


def reference_for_seed(
    model_dir: Path, seed: int, truncation: float = 1.0, class_index: int | None = None
) -> np.ndarray:
    """The image of a seed; for a conditional model as `class_index` (default: the seed
    contract's seed % num_classes)."""
    card = ModelCard.load(model_dir / CARD_FILENAME)
    latent = latent_for_seed(seed, card.latent_dim)
    if truncation != 1.0:
        latent = latent * np.float32(truncation)
    weights = None
    if card.conditioning is not None:
        index = seed % card.num_classes if class_index is None else class_index
        weights = np.eye(card.num_classes, dtype=np.float32)[[index]]
    return reference_images(model_dir, latent[None, :], weights)[0]


def dataplane(client: httpx.AsyncClient) -> DataPlane:
    plane: DataPlane = client.app.state.dataplane  # type: ignore[attr-defined]
    return plane


def served(client: httpx.AsyncClient, name: str) -> ServedModel:
    return dataplane(client).models[name]


class HeldModel:
    """A model whose inference thread blocks until `release()`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, PATIENCE_S), "model never ran"

    def release(self) -> None:
        self.gate.set()


@contextmanager
def hold_model(model: ServedModel) -> Iterator[HeldModel]:
    held = HeldModel()
    generator = model.loaded.generator
    original: Callable[..., np.ndarray] = generator.generate

    def blocking(latents: np.ndarray, *class_weights: np.ndarray) -> np.ndarray:
        held.entered.set()
        held.gate.wait(PATIENCE_S)
        return original(latents, *class_weights)

    generator.generate = blocking  # type: ignore[method-assign]
    try:
        yield held
    finally:
        held.release()
        generator.generate = original  # type: ignore[method-assign]


async def wait_until(condition: Callable[[], bool], timeout_s: float = PATIENCE_S) -> None:
    steps = int(timeout_s / 0.005)
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == error_type, body
    assert body["error"]["message"]
    detail: dict[str, Any] = body["error"]
    return detail
