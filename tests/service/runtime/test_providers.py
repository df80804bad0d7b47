"""Provider choice: auto prefers CUDA when offered; an explicit but unusable CUDA stops start-up."""

from __future__ import annotations

import pytest

from service.runtime.providers import (
    CPU,
    CUDA,
    ProviderUnavailable,
    check_providers_in_use,
    plan_providers,
)


def names(specs: tuple[object, ...]) -> list[str]:
    return [spec if isinstance(spec, str) else spec[0] for spec in specs]  # type: ignore[index]


def test_auto_uses_cpu_when_cuda_is_not_offered() -> None:
    assert names(plan_providers("auto", available=[CPU]).specs) == [CPU]


def test_auto_prefers_cuda_when_offered() -> None:
    plan = plan_providers("auto", device_id=1, available=[CUDA, CPU])
    assert names(plan.specs) == [CUDA, CPU]
    assert plan.specs[0] == (CUDA, {"device_id": 1, "cudnn_conv_algo_search": "DEFAULT"})


def test_cpu_never_asks_for_cuda() -> None:
    assert names(plan_providers("cpu", available=[CUDA, CPU]).specs) == [CPU]


def test_explicit_cuda_that_is_not_built_in_is_an_error() -> None:
    with pytest.raises(ProviderUnavailable, match="providers=cuda, but this onnxruntime build"):
        plan_providers("cuda", available=[CPU])


def test_explicit_cuda_that_fell_back_is_an_error() -> None:
    plan = plan_providers("cuda", available=[CUDA, CPU])
    with pytest.raises(ProviderUnavailable, match="could not initialise CUDA"):
        check_providers_in_use(plan, [CPU], "m")
    check_providers_in_use(plan, [CUDA, CPU], "m")


def test_auto_fallback_is_allowed() -> None:
    check_providers_in_use(plan_providers("auto", available=[CUDA, CPU]), [CPU], "m")


def test_unknown_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="got 'tpu'"):
        plan_providers("tpu", available=[CPU])
