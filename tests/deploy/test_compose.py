"""docker-compose.yml through a real compose parser (Debian's docker-compose, which checks the
file against the Compose schema and resolves .env, anchors and interpolation), and .env.example
against the service's settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.settings import Settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
GPU_SERVICES = {"api", "replica"}
CPU_SERVICES = {"api-cpu", "replica-cpu"}
APP_SERVICES = GPU_SERVICES | CPU_SERVICES
LB_SERVICES = {"lb", "lb-cpu"}
ENV_LINE = re.compile(r"^#?\s*(IMAGEGEN_[A-Z0-9_]+)=(.*)$")


def project(tmp_path: Path, env_text: str | None = None) -> Path:
    """A copy of what compose reads (the file, .env from .env.example, nginx.conf)."""
    (tmp_path / "deploy" / "nginx").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    shutil.copy(NGINX_CONF, tmp_path / "deploy" / "nginx" / "nginx.conf")
    text = ENV_EXAMPLE.read_text(encoding="utf-8") if env_text is None else env_text
    (tmp_path / ".env").write_text(text, encoding="utf-8")
    return tmp_path


def compose(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("needs Debian's docker-compose (the compose parser): make system-deps")
    return subprocess.run(
        [binary, "--project-directory", str(directory), *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def resolved(directory: Path) -> dict[str, Any]:
    result = compose(directory, "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return resolved(project(tmp_path_factory.mktemp("compose")))


def test_the_parser_rejects_what_the_schema_does_not_allow(tmp_path: Path) -> None:
    """The same parser refuses a misspelt GPU reservation: it really validates."""
    directory = project(tmp_path)
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("capabilities:", "capabilitiez:")
    (directory / "docker-compose.yml").write_text(text, encoding="utf-8")
    result = compose(directory, "config")
    assert result.returncode != 0
    assert "capabilitiez" in result.stderr


def test_only_the_gpu_api_starts_without_a_profile(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == APP_SERVICES | LB_SERVICES
    profiles = {name: service.get("profiles", []) for name, service in services.items()}
    assert profiles == {
        "api": [],
        "api-cpu": ["cpu"],
        "replica": ["scaled"],
        "lb": ["scaled"],
        "replica-cpu": ["scaled-cpu"],
        "lb-cpu": ["scaled-cpu"],
    }


def test_gpu_services_reserve_an_nvidia_gpu_and_demand_cuda(config: dict[str, Any]) -> None:
    for name in GPU_SERVICES:
        service = config["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}
        assert service["environment"]["IMAGEGEN_PROVIDERS"] == "cuda"
        assert service["image"] == "imagegen:gpu"
        assert service["build"]["args"] == {"RUNTIME": "gpu"}
    for name in CPU_SERVICES:
        service = config["services"][name]
        assert "resources" not in service.get("deploy", {})
        assert service["environment"]["IMAGEGEN_PROVIDERS"] == "cpu"
        assert service["image"] == "imagegen:cpu"
        assert service["build"]["args"] == {"RUNTIME": "cpu"}


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(
        float(value) * units[unit] for value, unit in re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    )


def test_every_replica_is_healthchecked_restarted_and_drained(config: dict[str, Any]) -> None:
    grace_s = Settings().shutdown_grace_s
    for name in APP_SERVICES:
        service = config["services"][name]
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and "/readyz" in test[-1]
        assert seconds(service["healthcheck"]["start_period"]) >= 60
        assert service["restart"] == "unless-stopped"
        assert service["stop_signal"] == "SIGTERM"
        # Compose's SIGKILL comes only after the service's own drain time.
        assert seconds(service["stop_grace_period"]) > grace_s
        models = next(v for v in service["volumes"] if isinstance(v, dict))
        assert models["target"] == "/models" and models["read_only"] is True
        assert service["environment"]["IMAGEGEN_MODELS_DIR"] == "/models"
        assert service["environment"]["IMAGEGEN_HOST"] == "0.0.0.0"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        # The image user's home is a tmpfs it owns (onnxruntime keeps state there).
        user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
        assert user is not None
        assert f"/home/imagegen:uid={user[1]},gid={user[2]},mode=0700" in service["tmpfs"]


def test_one_published_port_in_every_variant(config: dict[str, Any]) -> None:
    services = config["services"]
    published = {
        name: [(p["published"], p["target"]) for p in service.get("ports", [])]
        for name, service in services.items()
    }
    assert published == {
        "api": [(8000, 8000), (8001, 8001)],  # HTTP; gRPC (Open Inference Protocol)
        "api-cpu": [(8000, 8000), (8001, 8001)],
        "replica": [],
        "replica-cpu": [],
        "lb": [(8000, 8080)],
        "lb-cpu": [(8000, 8080)],
    }


def nginx_upstream() -> tuple[str, int, int]:
    text = NGINX_CONF.read_text(encoding="utf-8")
    server = re.search(r"^\s*server\s+([\w.-]+):(\d+)\b", text, re.MULTILINE)
    listen = re.search(r"^\s*listen\s+(\d+);", text, re.MULTILINE)
    assert server and listen
    return server[1], int(server[2]), int(listen[1])


def test_nginx_fronts_the_replicas_by_their_compose_name(config: dict[str, Any]) -> None:
    host, port, listen = nginx_upstream()
    services = config["services"]
    assert services["replica"]["deploy"]["replicas"] >= 2
    assert services["replica-cpu"]["deploy"]["replicas"] >= 2
    assert host == "replica"
    assert services["replica-cpu"]["networks"]["default"]["aliases"] == ["replica"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["IMAGEGEN_PORT"] == str(port)
    for lb, replica in (("lb", "replica"), ("lb-cpu", "replica-cpu")):
        service = services[lb]
        (mount,) = service["volumes"]
        assert mount["target"] == "/etc/nginx/nginx.conf" and mount["read_only"] is True
        assert Path(mount["source"]).name == "nginx.conf"
        assert Path(mount["source"]).parent.name == "nginx"
        assert service["depends_on"] == {replica: {"condition": "service_healthy"}}
        assert service["ports"][0]["target"] == listen
        assert "/readyz" in " ".join(service["healthcheck"]["test"])


def test_settings_in_dot_env_reach_the_containers(tmp_path: Path) -> None:
    env = "IMAGEGEN_MAX_BATCH_SIZE=64\nIMAGEGEN_PROVIDERS=tensorrt\nIMAGEGEN_PUBLISHED_PORT=9000\n"
    env += "IMAGEGEN_GPU_DEVICE=GPU-0f1e2d3c\n"
    services = resolved(project(tmp_path, env))["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["IMAGEGEN_MAX_BATCH_SIZE"] == "64"
    assert services["api"]["environment"]["IMAGEGEN_PROVIDERS"] == "tensorrt"
    assert services["api-cpu"]["environment"]["IMAGEGEN_PROVIDERS"] == "cpu"
    assert services["api"]["ports"][0]["published"] == 9000
    devices = services["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["device_ids"] == ["GPU-0f1e2d3c"]


def test_compose_works_without_dot_env_on_the_services_defaults(tmp_path: Path) -> None:
    """.env is optional: without it every container gets the service's own defaults."""
    directory = project(tmp_path)
    (directory / ".env").unlink()
    services = resolved(directory)["services"]
    defaults = Settings()
    set_by_deployment = {"models_dir", "host", "port", "providers", "tensorrt_cache_dir"}
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        for field in Settings.model_fields:
            variable = f"IMAGEGEN_{field.upper()}"
            assert variable in environment, f"{name} does not pass {variable}"
            if field in set_by_deployment:
                continue
            value = Settings(**{field: environment[variable]})
            assert getattr(value, field) == getattr(defaults, field), (name, variable)
        assert Settings(**{k.removeprefix("IMAGEGEN_").lower(): v for k, v in environment.items()})
    assert services["api"]["ports"][0]["published"] == 8000


def documented_variables() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            assert match[1] not in values, f"{match[1]} documented twice"
            values[match[1]] = match[2]
    return values


def test_env_example_documents_every_setting_with_a_valid_value() -> None:
    documented = documented_variables()
    settings = {f"IMAGEGEN_{name.upper()}": name for name in Settings.model_fields}
    missing = sorted(set(settings) - set(documented))
    assert not missing, f".env.example lacks {missing}"
    for variable, field in settings.items():
        value = documented[variable]
        try:
            Settings(**{field: value})
        except ValidationError as error:  # pragma: no cover - the message is the point
            pytest.fail(f".env.example: {variable}={value} is not a valid setting: {error}")
    # Everything that is not a setting is a compose variable, used in docker-compose.yml.
    compose_text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{(IMAGEGEN_[A-Z0-9_]+)", compose_text))
    assert set(documented) - set(settings) == used - set(settings)
    assert used <= set(documented)


def test_env_example_defaults_match_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where .env.example shows a default, it is the service's real default."""
    for key in list(os.environ):  # the defaults, not what this shell or the suite sets
        if key.startswith("IMAGEGEN_"):
            monkeypatch.delenv(key)
    documented = documented_variables()
    defaults = Settings()
    deployment_values = {"IMAGEGEN_MODELS_DIR", "IMAGEGEN_HOST", "IMAGEGEN_PROVIDERS"}
    deployment_values |= {"IMAGEGEN_TENSORRT_CACHE_DIR"}  # set by the image and compose
    for field in Settings.model_fields:
        variable = f"IMAGEGEN_{field.upper()}"
        if variable in deployment_values:
            continue
        shown = Settings(**{field: documented[variable]})
        assert getattr(shown, field) == getattr(defaults, field), variable
