"""Choosing onnxruntime execution providers: `auto`, `cpu` or `cuda`, never a silent fallback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

ProviderSpec = str | tuple[str, dict[str, Any]]


class ProviderUnavailable(RuntimeError):
    """An explicitly requested execution provider cannot be used; start-up must stop."""


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask onnxruntime for, and whether CUDA is a must."""

    requested: str
    specs: tuple[ProviderSpec, ...]

    @property
    def wants_cuda(self) -> bool:
        return any(_name(spec) == CUDA for spec in self.specs)


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def plan_providers(
    requested: str, device_id: int = 0, available: Sequence[str] | None = None
) -> ProviderPlan:
    """Turn the `providers` setting into an onnxruntime provider list.

    `available` defaults to what this onnxruntime build offers; CUDA being listed there only
    means the build supports it, so `check_providers_in_use` confirms it after loading.
    """
    offered = list(ort.get_available_providers() if available is None else available)
    # Deterministic cuDNN algorithm choice keeps a seed's bytes identical across restarts.
    cuda: ProviderSpec = (CUDA, {"device_id": device_id, "cudnn_conv_algo_search": "DEFAULT"})
    if requested == "cpu":
        return ProviderPlan(requested, (CPU,))
    if requested == "cuda":
        if CUDA not in offered:
            raise ProviderUnavailable(
                f"providers=cuda, but this onnxruntime build offers only {offered}; "
                "install the gpu extra (onnxruntime-gpu) or use providers=auto/cpu"
            )
        return ProviderPlan(requested, (cuda, CPU))
    if requested == "auto":
        return ProviderPlan(requested, (cuda, CPU) if CUDA in offered else (CPU,))
    raise ValueError(f"providers must be 'auto', 'cpu' or 'cuda', got {requested!r}")


def check_providers_in_use(plan: ProviderPlan, in_use: Sequence[str], model: str) -> None:
    """Fail when CUDA was demanded but the session fell back; note a fallback under `auto`."""
    if not plan.wants_cuda or CUDA in in_use:
        return
    if plan.requested == "cuda":
        raise ProviderUnavailable(
            f"model {model}: providers=cuda, but onnxruntime could not initialise CUDA "
            f"(driver, CUDA or cuDNN libraries?); the session would run on {list(in_use)}"
        )
    logger.warning("model %s: CUDA is not usable here, running on %s", model, list(in_use))
