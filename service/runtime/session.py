"""One model's onnxruntime session: latents `[n, latent_dim]` float32 in (with class weights
`[n, num_classes]` float32 for a class-conditional model), uint8 NHWC images out."""

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
    # Pool threads spin while a run is in progress (a parallel section hands over without a
    # futex wake-up: lone requests measured faster and batches under load no slower), and stop
    # spinning as soon as a run ends, so idle threads never burn the cores the event loop, PNG
    # encoding and the clients need (onnxruntime's default spins on for a while after a run).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
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
    onnxruntime picks never depend on how many images share a batch. With `io_binding`, the
    latents are bound where they lie and the device copies the output straight into a host
    array made for it (on CUDA this saves `run`'s extra host-side output copy).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        pad_to_rows: int | None = None,
        io_binding: bool = False,
    ) -> None:
        self.session = session
        self.card = card
        self.pad_to_rows = pad_to_rows
        self.io_binding = io_binding
        self.image_shape = (card.image.height, card.image.width, card.image.channels)
        self.class_input = card.conditioning.input_name if card.conditioning else None

    @property
    def providers(self) -> list[str]:
        providers: list[str] = self.session.get_providers()
        return providers

    def run_raw(self, latents: np.ndarray, class_weights: np.ndarray | None = None) -> np.ndarray:
        """The network's float output for `latents` (and, for a conditional model, the class
        weights `[n, num_classes]`), shape `[n, H, W, C]`."""
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        if (class_weights is None) != (self.class_input is None):
            raise ValueError(
                f"model {self.card.name} "
                + ("needs class weights" if class_weights is None else "takes no class weights")
            )
        if class_weights is not None:
            class_weights = np.ascontiguousarray(class_weights, dtype=np.float32)
            if class_weights.shape != (latents.shape[0], self.card.num_classes):
                raise ValueError(
                    f"class weights have shape {list(class_weights.shape)}, expected "
                    f"{[latents.shape[0], self.card.num_classes]}"
                )
        rows = latents.shape[0]
        if self.pad_to_rows is None:
            return self._run(latents, class_weights)
        chunk = self.pad_to_rows
        outputs = []
        for start in range(0, rows, chunk):
            part = latents[start : start + chunk]
            padded = np.zeros((chunk, latents.shape[1]), dtype=np.float32)
            padded[: part.shape[0]] = part
            padded_weights = None
            if class_weights is not None:
                padded_weights = np.zeros((chunk, class_weights.shape[1]), dtype=np.float32)
                padded_weights[: part.shape[0]] = class_weights[start : start + chunk]
            outputs.append(self._run(padded, padded_weights)[: part.shape[0]])
        return np.concatenate(outputs, axis=0)

    def generate(self, latents: np.ndarray, class_weights: np.ndarray | None = None) -> np.ndarray:
        """uint8 images `[n, H, W, C]` for `latents` `[n, latent_dim]` (and class weights
        `[n, num_classes]` for a conditional model)."""
        raw = self.run_raw(latents, class_weights)
        expected = (latents.shape[0], *self.image_shape)
        if raw.shape != expected:
            raise ValueError(f"model output has shape {list(raw.shape)}, expected {list(expected)}")
        lo, hi = self.card.image.output_range
        if not np.isfinite(raw).all():
            # Extreme but valid latents can overflow to NaN; show them as the range's ends.
            raw = np.nan_to_num(raw, nan=lo, posinf=hi, neginf=lo)
        return to_uint8(raw, (lo, hi))

    def _run(self, latents: np.ndarray, class_weights: np.ndarray | None = None) -> np.ndarray:
        if self.io_binding:
            return self._run_bound(latents, class_weights)
        feed = {self.card.input_name: latents}
        if class_weights is not None:
            assert self.class_input is not None
            feed[self.class_input] = class_weights
        (output,) = self.session.run([self.card.output_name], feed)
        return np.asarray(output)

    def _run_bound(self, latents: np.ndarray, class_weights: np.ndarray | None) -> np.ndarray:
        # A binding per call keeps the generator thread-safe; the output array is ours to keep.
        output = np.empty((latents.shape[0], *self.image_shape), dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.card.input_name, latents)
        if class_weights is not None:
            assert self.class_input is not None
            binding.bind_cpu_input(self.class_input, class_weights)
        binding.bind_output(
            self.card.output_name,
            "cpu",
            0,
            np.float32,
            list(output.shape),
            output.ctypes.data,
        )
        self.session.run_with_iobinding(binding)
        return output
