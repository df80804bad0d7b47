"""The serving image's Dockerfile and build context: hadolint finds nothing, the stages do what
the deployment relies on (one onnxruntime, no TensorFlow, non-root, health check on /readyz),
and .dockerignore, read by docker's own rules, keeps training code and local state out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# Debian's docker-compose brings docker-py, whose exclude_paths is what `docker build` (the
# classic builder and docker-py clients) applies to .dockerignore.
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages, each instruction with its continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base=parts[0], name=name))
        elif not stages and keyword == "ARG":
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return {stage.name: stage for stage in parsed}


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=2)


def test_hadolint_really_lints() -> None:
    """The same call does fail on a Dockerfile with classic mistakes."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    bad = "FROM python:latest\nRUN cd /src && pip install flask\n"
    result = subprocess.run(
        [hadolint, "--format", "json", "-"],
        input=bad,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3013"} <= codes  # :latest, unpinned pip


def test_stages_build_then_slim_runtime(stages: dict[str, Stage]) -> None:
    global_args, _ = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    assert list(stages) == ["build", "models", "runtime"]
    assert re.fullmatch(r"python:3\.\d+-slim-\w+", global_args["PYTHON_IMAGE"])
    assert stages["build"].base == stages["runtime"].base == "${PYTHON_IMAGE}"
    runtime = stages["runtime"]
    copies = runtime.all("COPY")
    assert "--from=build /opt/venv /opt/venv" in copies
    assert "--from=models /models /app/models" in copies
    # Nothing is compiled or installed in the runtime stage: it only copies and configures.
    assert not any("pip install" in run or "apt-get" in run for run in runtime.all("RUN"))


def test_one_onnxruntime_gpu_by_default_cpu_by_argument(stages: dict[str, Stage]) -> None:
    build = stages["build"]
    assert "RUNTIME=gpu" in build.all("ARG")
    (install,) = [run for run in build.all("RUN") if "pip install" in run]
    cpu_install = install.index('pip install --no-cache-dir -c requirements.lock ".[grpc]"')
    uninstall = install.index("pip uninstall --yes onnxruntime")
    gpu_install = install.index('"onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"')
    # onnxruntime-gpu goes onto an environment without onnxruntime: never both at once.
    assert cpu_install < uninstall < gpu_install
    assert 'if [ "$RUNTIME" = gpu ]' in install
    # The build checks what it made: no TensorFlow, and CUDA offered exactly when it should.
    assert "find_spec('tensorflow') is not None" in install
    assert "'CUDAExecutionProvider' in p" in install
    version = next(a for a in build.all("ARG") if a.startswith("ONNXRUNTIME_GPU_VERSION="))
    assert re.fullmatch(r"ONNXRUNTIME_GPU_VERSION=1\.\d+\.\d+", version)
    # The NVIDIA wheels under it are pinned by the constraints file.
    assert "GPU_CONSTRAINTS=deploy/gpu-constraints.txt" in build.all("ARG")
    assert '-c "$GPU_CONSTRAINTS"' in install[uninstall:gpu_install]


def test_gpu_constraints_pin_nvidia_wheels_only() -> None:
    lines = (ROOT / "deploy" / "gpu-constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins, "deploy/gpu-constraints.txt pins nothing"
    for pin in pins:
        assert re.fullmatch(r"nvidia-[a-z0-9-]+==[\w.]+", pin), pin
    assert any(pin.startswith(("nvidia-cudnn-", "nvidia-cuda-runtime")) for pin in pins)


def test_builds_offline_without_a_frontend_image() -> None:
    """No `# syntax=` line: BuildKit would fetch that frontend image from a registry."""
    first = DOCKERFILE.read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE)


def test_no_tensorflow_and_no_training_code(stages: dict[str, Stage]) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    commands = " ".join(args for stage in stages.values() for _, args in stage.instructions)
    assert "tensorflow" not in commands.replace("find_spec('tensorflow')", "")
    assert "[train" not in text and "training" not in commands
    copied = [c for stage in stages.values() for c in stage.all("COPY") if "--from" not in c]
    assert copied == [
        "pyproject.toml README.md requirements.lock ./",
        "deploy/gpu-constraints.txt ./deploy/",
        "service ./service",
        "models/ /models/",
    ]


def test_runtime_is_non_root_healthy_and_unbuffered(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    env = " ".join(runtime.all("ENV"))
    for setting in (
        "PYTHONUNBUFFERED=1",
        "IMAGEGEN_HOST=0.0.0.0",
        "IMAGEGEN_PORT=8000",
        "IMAGEGEN_MODELS_DIR=/app/models",
    ):
        assert setting in env.split(), setting
    assert runtime.all("EXPOSE") == ["8000 8001"]  # HTTP; gRPC (Open Inference Protocol)
    (user,) = runtime.all("USER")
    assert re.fullmatch(r"[1-9]\d+:[1-9]\d+", user), "a numeric non-root user (Kubernetes checks)"
    uid, gid = (int(part) for part in user.split(":"))
    # useradd --system's range on Debian (SYS_UID_MIN..SYS_UID_MAX), so it warns about nothing.
    assert 100 <= uid <= 999 and 100 <= gid <= 999
    (create,) = [run for run in runtime.all("RUN") if "useradd" in run]
    assert f"--uid {uid}" in create and f"--gid {gid}" in create and "--system" in create
    # A home of its own (onnxruntime keeps state there), not root's /app.
    home = re.search(r"\bHOME=(\S+)", env)
    assert home is not None and home[1] != "/app" and f"--home-dir {home[1]}" in create
    assert "--create-home" in create
    # The TensorRT libraries' path does not name a Python version (the base is an argument).
    library_path = re.search(r"\bLD_LIBRARY_PATH=(\S+)", env)
    assert library_path is not None and "python3" not in library_path[1]
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/readyz" in healthcheck and "curl" not in healthcheck and "wget" not in healthcheck
    assert runtime.all("ENTRYPOINT") == ['["imagegen"]']
    assert runtime.all("CMD") == ['["serve"]']
    assert runtime.all("STOPSIGNAL") == ["SIGTERM"]


def test_fp16_variants_are_made_in_their_own_stage(stages: dict[str, Stage]) -> None:
    models = stages["models"]
    assert models.base == "build"
    assert "FP16_VARIANTS=false" in models.all("ARG")
    (run,) = models.all("RUN")
    assert "imagegen fp16 --models-dir /models" in run
    assert "onnx" in run  # installed here only: the runtime copies the build stage's venv


def healthcheck_command() -> list[str]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    (healthcheck,) = parsed[-1].all("HEALTHCHECK")
    command: list[str] = json.loads(healthcheck.split(" CMD ", 1)[1])
    return command


def test_healthcheck_runs_with_the_standard_library_only() -> None:
    """The exact HEALTHCHECK command fails (non-zero) when nothing listens."""
    command = healthcheck_command()
    assert command[0] == "python"
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env={"IMAGEGEN_PORT": "9"},  # discard port: connection refused
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def build_context() -> set[str]:
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.fail("needs Debian's docker-compose (python3-docker): make system-deps")
    script = (
        "import sys; from docker.utils.build import exclude_paths; "
        "root = sys.argv[1]; patterns = [p.strip() for p in open(root + '/.dockerignore') "
        "if p.strip() and not p.startswith('#')]; "
        "print('\\n'.join(sorted(exclude_paths(root, patterns))))"
    )
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", script, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 and "No module named 'docker'" in result.stderr:
        pytest.fail("needs Debian's docker-compose (python3-docker): make system-deps")
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_build_context_holds_the_service_and_models_only() -> None:
    context = build_context()
    tracked = subprocess.run(
        ["git", "ls-files", "service", "models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"pyproject.toml", "README.md", "requirements.lock"} <= context
    assert set(tracked) <= context, sorted(set(tracked) - context)
    top_level = {path.split("/")[0] for path in context}
    # docker always sends the Dockerfile and .dockerignore themselves.
    allowed = {"pyproject.toml", "README.md", "requirements.lock", "service", "models", "deploy"}
    assert top_level <= allowed | {"Dockerfile", ".dockerignore"}
    assert not top_level & {"training", "tests", ".venv", "runs", ".git", "docs"}
    assert {path for path in context if path.startswith("deploy")} == {"deploy/gpu-constraints.txt"}
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in context)
