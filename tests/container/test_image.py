"""The CPU image, built from the checkout in a private Docker daemon: what is in it and what is
not (TensorFlow, a compiler, root), its size, layers and labels, and the fp16 variant build."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.container.compose import Project
from tests.container.engine import ROOT, BuiltImage, Engine

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

# Measured: about 510 MB on the Debian stand-in base (240 MB of it the base).
MAX_IMAGE_BYTES = 700 * 1024 * 1024
# The runtime stage on top of its base: the user, the venv, the models (WORKDIR, ENV, LABEL
# and the rest make no layer, or an empty one).
MAX_OWN_LAYERS = 4
# The distribution pyproject.toml declares (its [project] name).
DISTRIBUTION = re.search(
    r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M
)[1]  # type: ignore[index]
SHIPPED_MODELS = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "model.json").is_file())
# `imagegen fp16` makes a variant of every model, class-conditional ones included.
FP16_MODELS = SHIPPED_MODELS


def in_image(engine: Engine, tag: str, script: str) -> str:
    """Run `python -c script` in the image as its own user, with no network."""
    result = engine.run(
        "run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", script
    )
    return result.stdout


def image_config(engine: Engine, tag: str) -> dict[str, Any]:
    return engine.inspect("image", tag)


def test_cpu_image_is_small_layered_and_labelled(
    engine: Engine, cpu_image: BuiltImage, python_base: str
) -> None:
    image = image_config(engine, cpu_image.tag)
    base = image_config(engine, python_base)
    assert image["Size"] < MAX_IMAGE_BYTES, f"{image['Size'] / 2**20:.0f} MiB"
    layers = image["RootFS"]["Layers"]
    base_layers = base["RootFS"]["Layers"]
    assert layers[: len(base_layers)] == base_layers
    assert len(layers) - len(base_layers) <= MAX_OWN_LAYERS
    config = image["Config"]
    assert config["Labels"]["org.opencontainers.image.title"] == "imagegen"
    assert config["Labels"]["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["Labels"]["io.imagegen.runtime"] == "cpu"
    assert config["Entrypoint"] == ["imagegen"] and config["Cmd"] == ["serve"]
    assert config["ExposedPorts"] == {"8000/tcp": {}, "8001/tcp": {}}  # HTTP, gRPC
    assert "/readyz" in " ".join(config["Healthcheck"]["Test"])
    # Nothing in the image's history installs system packages or compilers.
    history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", cpu_image.tag)
    assert not re.search(r"apt-get|apt install|gcc|build-essential", history.stdout)


def test_cpu_image_runs_as_a_system_user_with_its_own_home(
    engine: Engine, cpu_image: BuiltImage
) -> None:
    config = image_config(engine, cpu_image.tag)["Config"]
    uid, gid = (int(part) for part in config["User"].split(":"))
    facts = json.loads(
        in_image(
            engine,
            cpu_image.tag,
            "import json, os, pwd; home = os.environ['HOME']; "
            "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), "
            "'name': pwd.getpwuid(os.getuid()).pw_name, 'home': home, "
            "'home_owner': os.stat(home).st_uid, 'home_writable': os.access(home, os.W_OK), "
            "'login_defs': open('/etc/login.defs').read()}))",
        )
    )
    assert (facts["uid"], facts["gid"]) == (uid, gid)
    assert facts["name"] == "imagegen"
    # useradd --system's range, as the image's own /etc/login.defs gives it.
    limits = dict(re.findall(r"^#?\s*(SYS_UID_MIN|SYS_UID_MAX)\s+(\d+)", facts["login_defs"], re.M))
    assert int(limits["SYS_UID_MIN"]) <= uid <= int(limits["SYS_UID_MAX"])
    assert facts["home"] != "/app" and facts["home_owner"] == uid and facts["home_writable"]


def test_cpu_image_has_no_tensorflow_no_compiler_and_cpu_onnxruntime(
    engine: Engine, cpu_image: BuiltImage
) -> None:
    facts = json.loads(
        in_image(
            engine,
            cpu_image.tag,
            "import importlib.metadata as m, importlib.util as u, json, shutil, onnxruntime; "
            "print(json.dumps({'dists': sorted(d.metadata['Name'].lower() "
            "for d in m.distributions()), "
            "'tensorflow': u.find_spec('tensorflow') is not None, "
            "'compilers': [c for c in ('cc', 'gcc', 'g++', 'clang', 'make') if shutil.which(c)], "
            "'providers': onnxruntime.get_available_providers()}))",
        )
    )
    assert facts["tensorflow"] is False
    assert not [d for d in facts["dists"] if d.startswith(("tensorflow", "keras", "tf2onnx"))]
    assert facts["compilers"] == []
    assert DISTRIBUTION in facts["dists"] and "onnxruntime" in facts["dists"]
    assert "onnxruntime-gpu" not in facts["dists"] and "onnx" not in facts["dists"]
    assert "CPUExecutionProvider" in facts["providers"]
    assert not [p for p in facts["providers"] if p.startswith(("CUDA", "Tensorrt"))]


def test_image_installs_what_pyproject_declares(engine: Engine, cpu_image: BuiltImage) -> None:
    """The serving dependencies come from pyproject.toml (no hand-kept list in the Dockerfile):
    every one of them is installed, at a version that satisfies it."""
    report = in_image(
        engine,
        cpu_image.tag,
        f"import importlib.metadata as m; print('\\n'.join(m.requires({DISTRIBUTION!r}) or []))",
    )
    declared = [line for line in report.splitlines() if line and "extra ==" not in line]
    assert len(declared) >= 5
    missing = in_image(
        engine,
        cpu_image.tag,
        "import importlib.metadata as m, re\n"
        "from pip._vendor.packaging.requirements import Requirement\n"
        "bad = []\n"
        f"for line in m.requires({DISTRIBUTION!r}):\n"
        "    r = Requirement(line)\n"
        "    if r.marker and not r.marker.evaluate({'extra': ''}): continue\n"
        "    try: v = m.version(r.name)\n"
        "    except m.PackageNotFoundError: bad.append(line); continue\n"
        "    if not r.specifier.contains(v, prereleases=True): bad.append(line + ' has ' + v)\n"
        "print('\\n'.join(bad))",
    )
    assert missing.strip() == ""


def test_fp16_variant_build_adds_an_fp16_model_per_model(
    engine: Engine, cpu_image: BuiltImage, builder: Project
) -> None:
    tag = "imagegen:cpu-fp16"
    plain = engine.inspect("image", cpu_image.tag)["Id"]
    build = ["--profile", "cpu", "build", "--build-arg", "FP16_VARIANTS=true", "api-cpu"]
    try:
        builder.run(*build, timeout=1500)
        engine.run("tag", cpu_image.tag, tag)
    finally:
        # Back to the plain image, from the layer cache (the same image, not a rebuild).
        builder.run("--profile", "cpu", "build", "api-cpu", timeout=1500)
    assert engine.inspect("image", cpu_image.tag)["Id"] == plain
    listing = json.loads(
        in_image(
            engine,
            tag,
            "import json, os, pathlib, importlib.util as u; root = pathlib.Path('/app/models'); "
            "print(json.dumps({'models': {p.name: json.loads((p / 'model.json').read_text()) "
            "for p in root.iterdir()}, 'onnx': u.find_spec('onnx') is not None, "
            "'writable': os.access(root, os.W_OK)}))",
        )
    )
    models = listing["models"]
    assert sorted(models) == sorted([*SHIPPED_MODELS, *(f"{m}-fp16" for m in FP16_MODELS)])
    for name in FP16_MODELS:
        card = models[f"{name}-fp16"]
        assert card["onnx"]["precision"] == "fp16"
        assert card["onnx"]["converted_from"]["name"] == name
    # onnx converted them in the models stage; the runtime got only the serving venv.
    assert listing["onnx"] is False
    assert listing["writable"] is False
    engine.run("rmi", tag)
