"""Choosing onnxruntime execution providers: `auto`, `cpu`, `cuda` or `tensorrt`, never a silent
fallback; the CUDA and TensorRT provider options come from the settings.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

ProviderSpec = str | tuple[str, dict[str, Any]]


class ProviderUnavailable(RuntimeError):
    """An explicitly requested execution provider cannot be used; start-up must stop."""


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask onnxruntime for, and whether CUDA is a must."""

    requested: str
    specs: tuple[ProviderSpec, ...]

    @property
    def names(self) -> list[str]:
        return [_name(spec) for spec in self.specs]

    @property
    def wants_cuda(self) -> bool:
        return CUDA in self.names

    @property
    def wants_tensorrt(self) -> bool:
        return TENSORRT in self.names


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def cuda_provider_options(
    device_id: int = 0, *, mem_limit_mb: int = 0, conv_algo_search: str = "DEFAULT"
) -> dict[str, Any]:
    """CUDAExecutionProvider options; `DEFAULT` cuDNN algorithm search keeps a seed's bytes
    identical across restarts (`EXHAUSTIVE` times kernels at start-up and may pick others)."""
    options: dict[str, Any] = {"device_id": device_id, "cudnn_conv_algo_search": conv_algo_search}
    if mem_limit_mb > 0:
        options["gpu_mem_limit"] = mem_limit_mb * 1024 * 1024
        # Grow the arena by what is asked for, not in powers of two that overshoot the cap.
        options["arena_extend_strategy"] = "kSameAsRequested"
    return options


def tensorrt_provider_options(
    device_id: int = 0, *, cache_dir: Path | None = None
) -> dict[str, Any]:
    """TensorrtExecutionProvider options; with `cache_dir`, engines (and the kernel timings they
    were built from) are kept there, so a restart skips the build and reuses the same engine."""
    options: dict[str, Any] = {"device_id": device_id}
    if cache_dir is not None:
        options |= {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
        }
    return options


@functools.cache
def load_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels (the gpu extra) once per process.

    They live in site-packages, not on the dynamic loader's path, so onnxruntime-gpu needs
    them loaded before its CUDA provider is; builds without CUDA make this a no-op.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as error:  # a failure here shows up again, clearer, when sessions load
        logger.warning("could not preload the CUDA/cuDNN libraries: %s", error)


def plan_providers(
    requested: str,
    device_id: int = 0,
    available: Sequence[str] | None = None,
    *,
    cuda_mem_limit_mb: int = 0,
    cudnn_conv_algo_search: str = "DEFAULT",
    tensorrt_cache_dir: Path | None = None,
) -> ProviderPlan:
    """Turn the `providers` setting into an onnxruntime provider list.

    `available` defaults to what this onnxruntime build offers; CUDA being listed there only
    means the build supports it, so `check_providers_in_use` confirms it after loading.
    """
    offered = list(ort.get_available_providers() if available is None else available)
    cuda: ProviderSpec = (
        CUDA,
        cuda_provider_options(
            device_id, mem_limit_mb=cuda_mem_limit_mb, conv_algo_search=cudnn_conv_algo_search
        ),
    )
    tensorrt: ProviderSpec = (
        TENSORRT,
        tensorrt_provider_options(device_id, cache_dir=tensorrt_cache_dir),
    )
    if requested == "cpu":
        plan = ProviderPlan(requested, (CPU,))
    elif requested == "cuda":
        if CUDA not in offered:
            raise ProviderUnavailable(
                f"providers=cuda, but this onnxruntime build offers only {offered}; "
                "install the gpu extra (onnxruntime-gpu) or use providers=auto/cpu"
            )
        plan = ProviderPlan(requested, (cuda, CPU))
    elif requested == "tensorrt":
        if TENSORRT not in offered or CUDA not in offered:
            raise ProviderUnavailable(
                f"providers=tensorrt, but this onnxruntime build offers only {offered}; "
                "install the gpu extra (onnxruntime-gpu) or use providers=cuda/auto/cpu"
            )
        # Nodes TensorRT cannot take run on CUDA; CPU only holds what neither has kernels for.
        plan = ProviderPlan(requested, (tensorrt, cuda, CPU))
    elif requested == "auto":
        plan = ProviderPlan(requested, (cuda, CPU) if CUDA in offered else (CPU,))
    else:
        raise ValueError(
            f"providers must be 'auto', 'cpu', 'cuda' or 'tensorrt', got {requested!r}"
        )
    if plan.wants_cuda and available is None:
        load_cuda_libraries()
    return plan


def plan_for_settings(settings: Settings, available: Sequence[str] | None = None) -> ProviderPlan:
    """The provider plan the settings ask for, with their CUDA and TensorRT options."""
    return plan_providers(
        settings.providers,
        settings.device_id,
        available,
        cuda_mem_limit_mb=settings.cuda_mem_limit_mb,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
        tensorrt_cache_dir=settings.tensorrt_cache_dir,
    )


def check_providers_in_use(plan: ProviderPlan, in_use: Sequence[str], model: str) -> None:
    """Fail when CUDA or TensorRT was demanded but the session fell back; note a fallback
    under `auto`."""
    if plan.requested == "tensorrt" and TENSORRT not in in_use:
        raise ProviderUnavailable(
            f"model {model}: providers=tensorrt, but onnxruntime could not initialise TensorRT "
            f"(TensorRT 10 libraries, CUDA, cuDNN?); the session would run on {list(in_use)}"
        )
    if not plan.wants_cuda or CUDA in in_use:
        return
    if plan.requested in ("cuda", "tensorrt"):
        raise ProviderUnavailable(
            f"model {model}: providers={plan.requested}, but onnxruntime could not initialise CUDA "
            f"(driver, CUDA or cuDNN libraries?); the session would run on {list(in_use)}"
        )
    logger.warning("model %s: CUDA is not usable here, running on %s", model, list(in_use))
