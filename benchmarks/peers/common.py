"""What every peer shares: the model file, the seed contract, and a plain PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, ModelCard, latent_for_seed, to_uint8


class Model:
    """One onnxruntime session with onnxruntime's own defaults, as a team would start one."""

    def __init__(self, model_dir: Path) -> None:
        self.card = ModelCard.load(model_dir / CARD_FILENAME)
        self.session = ort.InferenceSession(
            str(model_dir / ONNX_FILENAME), providers=["CPUExecutionProvider"]
        )

    def latent(self, seed: int) -> np.ndarray:
        return latent_for_seed(seed, self.card.latent_dim)

    def images(self, latents: np.ndarray) -> np.ndarray:
        (output,) = self.session.run(
            [self.card.output_name], {self.card.input_name: latents.astype(np.float32)}
        )
        return to_uint8(np.asarray(output), self.card.image.output_range)


def png(image: np.ndarray) -> bytes:
    """Pillow's Image.save, as most code writes a PNG."""
    buffer = io.BytesIO()
    pixels = image[:, :, 0] if image.shape[2] == 1 else image
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
