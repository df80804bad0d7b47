"""The GPU image (onnxruntime-gpu[cuda,cudnn] with NVIDIA's CUDA and cuDNN wheels), built in the
private daemon: onnxruntime offers the CUDA provider, the NVIDIA wheels are exactly the pinned
ones, nothing else changed. About 3.7 GB and minutes of downloads, so it runs only when asked:

    python -m pytest tests/container -m gpu_image -s

No GPU is needed: the provider list is what the installed onnxruntime was built with."""

from __future__ import annotations

import json
import time

import pytest

from tests.container.compose import Project
from tests.container.engine import ROOT, Engine

pytestmark = [pytest.mark.container, pytest.mark.gpu_image, pytest.mark.timeout(3600)]

GPU_TAG = "imagegen:gpu"
CONSTRAINTS = ROOT / "deploy" / "gpu-constraints.txt"


def pins() -> dict[str, str]:
    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {name.lower(): version for name, version in pairs}


def test_gpu_image_offers_cuda_with_the_pinned_nvidia_wheels(
    engine: Engine, builder: Project
) -> None:
    started = time.monotonic()
    builder.run("build", "api", timeout=3000)  # the GPU service's image, imagegen:gpu
    build_s = time.monotonic() - started
    image = engine.inspect("image", GPU_TAG)
    facts = json.loads(
        engine.run(
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python",
            GPU_TAG,
            "-c",
            "import importlib.metadata as m, importlib.util as u, json, os, onnxruntime; "
            "print(json.dumps({'providers': onnxruntime.get_available_providers(), "
            "'dists': {d.metadata['Name'].lower(): d.version for d in m.distributions()}, "
            "'tensorflow': u.find_spec('tensorflow') is not None, 'uid': os.getuid()}))",
        ).stdout
    )
    dists = facts["dists"]
    print(
        f"\nGPU image: {image['Size'] / 1e9:.2f} GB, built in {build_s:.0f} s, "
        f"onnxruntime-gpu {dists.get('onnxruntime-gpu')}, providers {facts['providers']}"
    )
    assert "CUDAExecutionProvider" in facts["providers"]
    assert "onnxruntime-gpu" in dists and "onnxruntime" not in dists
    installed = {name: version for name, version in dists.items() if name.startswith("nvidia-")}
    # Every NVIDIA wheel is pinned, at the pinned version: refresh the file when this fails.
    assert installed == pins()
    assert facts["tensorflow"] is False and facts["uid"] != 0
    assert image["Config"]["Labels"]["io.imagegen.runtime"] == "gpu"
