"""`docker compose --profile cpu up -d api-cpu` on the shipped compose file: healthy, ready,
the checkout's bytes, the API key from .env enforced, and `docker compose stop` under load
answering every request accepted before the signal, exiting 0 within stop_grace_period.

The tests share one running service and run in file order; the last one stops it."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.container.compose import (
    Answer,
    Project,
    build_override,
    drive,
    dump,
    in_turn,
    log_time,
    reference,
)
from tests.container.engine import BuiltImage, Engine
from tests.reliability.harness import Server, free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

SERVICE = "api-cpu"
MODELS = ["fashion-gan", "fashion-vae", "mnist-gan", "mnist-vae"]
# uvicorn notices SIGTERM on its next tick (up to 0.1 s) and only then logs "Shutting down"
# and closes its socket; a request begun this long before that line was certainly accepted.
ACCEPT_MARGIN_S = 0.05


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(v) * units[u] for v, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


@pytest.fixture(scope="module")
def project(
    engine: Engine,
    cpu_image: BuiltImage,
    python_base: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Project]:
    env = {"IMAGEGEN_API_KEY": secrets.token_hex(16), "IMAGEGEN_PUBLISHED_PORT": str(free_port())}
    project = Project(
        engine,
        "igcpu",
        tmp_path_factory.mktemp("compose-cpu"),
        env,
        build_override([SERVICE], python_base),
    )
    try:
        # The image is there (the cpu_image fixture built it with compose): up builds nothing.
        project.run("--profile", "cpu", "up", "-d", SERVICE)
        project.wait_healthy(SERVICE)
        yield project
    finally:
        project.down()


def url(project: Project) -> str:
    return f"http://127.0.0.1:{project.env['IMAGEGEN_PUBLISHED_PORT']}"


def auth(project: Project) -> dict[str, str]:
    return {"authorization": f"Bearer {project.env['IMAGEGEN_API_KEY']}"}


def test_cpu_profile_is_healthy_and_ready(project: Project) -> None:
    (container,) = project.containers(SERVICE)
    assert project.state(container)["Health"]["Status"] == "healthy"
    # Only the named service runs: not the GPU "api" next to it.
    running = project.engine.run("ps", "--format", "{{.Names}}").stdout.split()
    assert running == [project.engine.inspect("container", container)["Name"].lstrip("/")]  # type: ignore[union-attr]
    assert httpx.get(f"{url(project)}/readyz", timeout=10).status_code == 200
    logs = project.logs(SERVICE)
    assert "loaded model fashion-gan" in logs
    # The image's user has a home (a tmpfs under the read-only root) for onnxruntime's state.
    assert "Failed to persist" not in logs and " WARNING " not in logs, logs[-3000:]


def test_a_seed_gives_the_checkouts_bytes(project: Project, checkout_server: Server) -> None:
    keys = {(kind, seed) for kind in ("image", "generate", "batch") for seed in (1, 7)}
    for model in MODELS:
        expected = reference(checkout_server.base_url, keys, model)
        answers = asyncio.run(drive(url(project), in_turn(keys), model, 1, auth(project)))
        assert {a.key: (a.status, a.body) for a in answers} == {
            key: (200, body) for key, body in expected.items()
        }, model


def test_the_api_key_from_dot_env_is_enforced(project: Project) -> None:
    path = f"{url(project)}/v1/models/mnist-gan/images/3.png"
    missing = httpx.get(path, timeout=30)
    wrong = httpx.get(path, headers={"authorization": "Bearer not-the-key"}, timeout=30)
    right = httpx.get(path, headers=auth(project), timeout=30)
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/json")
    assert right.status_code == 200 and right.content.startswith(b"\x89PNG")
    # Health and readiness stay open for the orchestrator's probes.
    assert httpx.get(f"{url(project)}/healthz", timeout=30).status_code == 200


def test_compose_stop_under_load_answers_every_accepted_request(
    project: Project, checkout_server: Server
) -> None:
    grace_s = seconds(project.config()["services"][SERVICE]["stop_grace_period"])
    (container,) = project.containers(SERVICE)
    model = "fashion-gan"
    stop_s = 0.0

    def keys(n: int) -> tuple[str, int]:
        return ("batch" if n % 2 else "image", n % 16)

    async def stop() -> None:
        nonlocal stop_s
        started = time.monotonic()
        await asyncio.to_thread(project.run, "stop", SERVICE, timeout=120)
        stop_s = time.monotonic() - started

    answers = asyncio.run(
        drive(url(project), keys, model, 8, auth(project), (40, stop), stop_on_failure=True)
    )
    state = project.state(container)
    logs = project.logs(SERVICE)
    (signalled_line,) = [line for line in logs.splitlines() if "Shutting down" in line]
    signalled = log_time(signalled_line)
    accepted = [a for a in answers if a.started < signalled - ACCEPT_MARGIN_S]
    in_flight = [a for a in accepted if a.done > signalled]
    assert in_flight, "no request was in flight when the signal came: " + dump(answers[-20:])
    unanswered: list[Answer] = [a for a in accepted if a.status != 200]
    assert not unanswered, dump(unanswered)
    # After the signal: answered, or refused (503 while draining, or no connection); never cut.
    late = [a for a in answers if a not in accepted]
    assert all(a.status in (200, 503, None) for a in late), dump(late)
    expected = reference(
        checkout_server.base_url, {a.key for a in answers if a.status == 200}, model
    )
    wrong = [a.key for a in answers if a.status == 200 and a.body != expected[a.key]]
    assert not wrong, wrong
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    assert not state["OOMKilled"]
    assert stop_s < grace_s, f"stop took {stop_s:.1f} s; stop_grace_period is {grace_s} s"
    assert "draining" in logs and "Finished server process" in logs
