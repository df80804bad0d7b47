"""One model's onnxruntime session: latents `[n, latent_dim]` float32 in, uint8 NHWC images out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.card import ModelCard, to_uint8
from service.runtime.providers import ProviderPlan


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    options.log_severity_level = 3  # errors only; provider fallbacks are reported by us
    return options


def create_session(
    onnx_path: Path, plan: ProviderPlan, intra_op_threads: int
) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(onnx_path),
        sess_options=session_options(intra_op_threads),
        providers=list(plan.specs),
    )


class ImageGenerator:
    """Runs a checked session; thread-safe, blocking (call it from a worker thread).

    With `pad_to_rows`, every run is zero-padded to exactly that many rows, so the kernels
    onnxruntime picks never depend on how many images share a batch.
    """

    def __init__(
        self, session: ort.InferenceSession, card: ModelCard, pad_to_rows: int | None = None
    ) -> None:
        self.session = session
        self.card = card
        self.pad_to_rows = pad_to_rows
        self.image_shape = (card.image.height, card.image.width, card.image.channels)

    @property
    def providers(self) -> list[str]:
        providers: list[str] = self.session.get_providers()
        return providers

    def run_raw(self, latents: np.ndarray) -> np.ndarray:
        """The network's float output for `latents`, shape `[n, H, W, C]`."""
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        rows = latents.shape[0]
        if self.pad_to_rows is None:
            return self._run(latents)
        chunk = self.pad_to_rows
        outputs = []
        for start in range(0, rows, chunk):
            part = latents[start : start + chunk]
            padded = np.zeros((chunk, latents.shape[1]), dtype=np.float32)
            padded[: part.shape[0]] = part
            outputs.append(self._run(padded)[: part.shape[0]])
        return np.concatenate(outputs, axis=0)

    def generate(self, latents: np.ndarray) -> np.ndarray:
        """uint8 images `[n, H, W, C]` for `latents` `[n, latent_dim]`."""
        raw = self.run_raw(latents)
        expected = (latents.shape[0], *self.image_shape)
        if raw.shape != expected:
            raise ValueError(f"model output has shape {list(raw.shape)}, expected {list(expected)}")
        lo, hi = self.card.image.output_range
        if not np.isfinite(raw).all():
            # Extreme but valid latents can overflow to NaN; show them as the range's ends.
            raw = np.nan_to_num(raw, nan=lo, posinf=hi, neginf=lo)
        return to_uint8(raw, (lo, hi))

    def _run(self, latents: np.ndarray) -> np.ndarray:
        (output,) = self.session.run([self.card.output_name], {self.card.input_name: latents})
        return np.asarray(output)
