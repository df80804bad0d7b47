"""The CUDA path, as far as a CPU-only machine can take it: provider options built from the
settings, provider choice against a faked `onnxruntime.get_available_providers`, explicit GPU
providers that are unusable stopping start-up, and IO binding giving the same bytes as `run`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from service.app import create_app
from service.runtime import providers
from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, ModelCard, latent_for_seed
from service.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderUnavailable,
    check_providers_in_use,
    plan_for_settings,
    plan_providers,
)
from service.runtime.registry import load_model
from service.runtime.session import ImageGenerator, create_session
from service.settings import Settings
from tests.service.conftest import GAN, VAE

MIB = 1024 * 1024


def test_cuda_options_come_from_the_settings() -> None:
    settings = Settings(
        providers="cuda", device_id=1, cuda_mem_limit_mb=512, cudnn_conv_algo_search="heuristic"
    )
    plan = plan_for_settings(settings, available=[CUDA, CPU])
    assert plan.specs == (
        (
            CUDA,
            {
                "device_id": 1,
                "cudnn_conv_algo_search": "HEURISTIC",
                "gpu_mem_limit": 512 * MIB,
                "arena_extend_strategy": "kSameAsRequested",
            },
        ),
        CPU,
    )


def test_default_cuda_options_are_deterministic_and_uncapped() -> None:
    plan = plan_for_settings(Settings(), available=[CUDA, CPU])
    assert plan.specs[0] == (CUDA, {"device_id": 0, "cudnn_conv_algo_search": "DEFAULT"})


def test_cuda_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_CUDA_MEM_LIMIT_MB", "2048")
    monkeypatch.setenv("IMAGEGEN_CUDNN_CONV_ALGO_SEARCH", "exhaustive")
    monkeypatch.setenv("IMAGEGEN_PROVIDERS", "TensorRT")
    monkeypatch.setenv("IMAGEGEN_TENSORRT_CACHE_DIR", "/var/cache/imagegen/tensorrt")
    settings = Settings()
    assert settings.cuda_mem_limit_mb == 2048
    assert settings.cudnn_conv_algo_search == "EXHAUSTIVE"
    assert settings.providers == "tensorrt"
    assert settings.tensorrt_cache_dir == Path("/var/cache/imagegen/tensorrt")


@pytest.mark.parametrize(
    ("field", "value"),
    [("cudnn_conv_algo_search", "fastest"), ("cuda_mem_limit_mb", -1), ("providers", "rocm")],
)
def test_bad_cuda_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_tensorrt_is_opt_in_and_falls_back_to_cuda_for_what_it_cannot_run(tmp_path: Path) -> None:
    everything = [TENSORRT, CUDA, CPU]
    assert plan_for_settings(Settings(), available=everything).names == [CUDA, CPU]
    cache = tmp_path / "engines"
    settings = Settings(providers="tensorrt", device_id=2, tensorrt_cache_dir=cache)
    plan = plan_for_settings(settings, available=everything)
    assert plan.names == [TENSORRT, CUDA, CPU]
    assert plan.wants_tensorrt and plan.wants_cuda
    assert plan.specs[0] == (
        TENSORRT,
        {
            "device_id": 2,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        },
    )
    assert plan.specs[1] == (CUDA, {"device_id": 2, "cudnn_conv_algo_search": "DEFAULT"})


def test_tensorrt_without_a_cache_dir_builds_engines_each_start() -> None:
    plan = plan_providers("tensorrt", available=[TENSORRT, CUDA, CPU])
    assert plan.specs[0] == (TENSORRT, {"device_id": 0})


def test_explicit_tensorrt_that_is_not_built_in_is_an_error() -> None:
    with pytest.raises(ProviderUnavailable, match="providers=tensorrt, but this onnxruntime"):
        plan_providers("tensorrt", available=[CUDA, CPU])


def test_explicit_tensorrt_that_fell_back_is_an_error() -> None:
    plan = plan_providers("tensorrt", available=[TENSORRT, CUDA, CPU])
    with pytest.raises(ProviderUnavailable, match="could not initialise TensorRT"):
        check_providers_in_use(plan, [CUDA, CPU], "m")
    with pytest.raises(ProviderUnavailable, match="could not initialise TensorRT"):
        check_providers_in_use(plan, [CPU], "m")
    check_providers_in_use(plan, [TENSORRT, CUDA, CPU], "m")


def test_auto_follows_what_onnxruntime_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    preloaded: list[dict[str, object]] = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(ort, "preload_dlls", lambda **kwargs: preloaded.append(kwargs))
    providers.load_cuda_libraries.cache_clear()
    try:
        assert plan_for_settings(Settings(providers="auto")).names == [CUDA, CPU]
        assert plan_for_settings(Settings(providers="cuda")).names == [CUDA, CPU]
        # The nvidia-* wheels' libraries are loaded once per process, before any CUDA session.
        assert preloaded == [{"cuda": True, "cudnn": True, "msvc": False}]
        monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
        assert plan_for_settings(Settings(providers="auto")).names == [CPU]
        with pytest.raises(ProviderUnavailable):
            plan_for_settings(Settings(providers="cuda"))
    finally:
        providers.load_cuda_libraries.cache_clear()


def test_cpu_only_never_loads_cuda_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "preload_dlls", lambda **kwargs: pytest.fail("preloaded"))
    providers.load_cuda_libraries.cache_clear()
    try:
        assert plan_for_settings(Settings(providers="cpu")).names == [CPU]
    finally:
        providers.load_cuda_libraries.cache_clear()


# onnxruntime warns (a Python warning) when asked for a provider its build lacks, then runs on
# CPU: exactly what a GPU build does on a host whose driver or libraries are missing.
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_explicit_cuda_whose_session_falls_back_stops_loading(models_dir: Path) -> None:
    plan = plan_providers("cuda", available=[CUDA, CPU])
    with pytest.raises(ProviderUnavailable, match=f"model {GAN}: providers=cuda, but onnxruntime"):
        load_model(models_dir / GAN, plan)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_auto_whose_cuda_session_falls_back_serves_on_cpu(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = plan_providers("auto", available=[CUDA, CPU])
    model = load_model(models_dir / GAN, plan)
    assert model.providers == [CPU]
    assert model.generator.pad_to_rows is None and not model.generator.io_binding
    assert "CUDA is not usable here" in caplog.text


async def test_explicit_cuda_on_a_cpu_build_fails_start_up(models_dir: Path) -> None:
    app = create_app(Settings(models_dir=models_dir, providers="cuda"))
    with pytest.raises(ProviderUnavailable, match="providers=cuda, but this onnxruntime build"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.server
@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_serve_with_an_unusable_gpu_provider_exits_with_the_reason(
    models_dir: Path, choice: str
) -> None:
    command = [sys.executable, "-m", "service", "serve", "--models-dir", str(models_dir)]
    command += ["--port", "1", "--providers", choice]  # never bound: start-up fails first
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    # An operator's error: status 2 and the reason once, without a traceback.
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count(f"providers={choice}, but this onnxruntime build offers only") == 1
    assert "Traceback" not in result.stderr


def generator_for(model_dir: Path, io_binding: bool, pad_to_rows: int | None) -> ImageGenerator:
    card = ModelCard.load(model_dir / CARD_FILENAME)
    session = create_session(model_dir / ONNX_FILENAME, plan_providers("cpu"), 1)
    return ImageGenerator(session, card, pad_to_rows=pad_to_rows, io_binding=io_binding)


@pytest.mark.parametrize("name", [GAN, VAE])
@pytest.mark.parametrize("pad_to_rows", [None, 4])
def test_io_binding_gives_the_same_images_as_run(
    models_dir: Path, name: str, pad_to_rows: int | None
) -> None:
    card = ModelCard.load(models_dir / name / CARD_FILENAME)
    latents = np.stack([latent_for_seed(seed, card.latent_dim) for seed in range(7)])
    plain = generator_for(models_dir / name, io_binding=False, pad_to_rows=pad_to_rows)
    bound = generator_for(models_dir / name, io_binding=True, pad_to_rows=pad_to_rows)
    raw = bound.run_raw(latents)
    assert raw.dtype == np.float32 and raw.flags.c_contiguous
    assert np.array_equal(raw, plain.run_raw(latents))
    assert np.array_equal(bound.generate(latents), plain.generate(latents))
    # Each call gets its own output array: earlier results are never overwritten.
    first = bound.run_raw(latents[:1]).copy()
    again = bound.run_raw(latents[:1])
    bound.run_raw(latents[1:3])
    assert np.array_equal(first, again)
