"""Fixtures of the container tier: one private dockerd per session, the stand-in bases, the
CPU image built from the checkout, and a server from the checkout to compare bytes with."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.container.compose import Project, build_override
from tests.container.engine import (
    COMPOSE_FILE,
    NGINX_CHANGES,
    NGINX_RECIPE,
    PYTHON_CHANGES,
    PYTHON_RECIPE,
    ROOT,
    BuiltImage,
    CannotRun,
    Engine,
    running_engine,
)
from tests.reliability.harness import Server, launch

PYTHON_STANDIN = "imagegen-standin/python:bookworm"
CPU_TAG = "imagegen:cpu"
CPU_SERVICE = "api-cpu"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The GPU image (minutes, gigabytes) is built only when asked for: `-m gpu_image`."""
    if "gpu_image" in (config.getoption("markexpr") or ""):
        return
    skipped = [item for item in items if item.get_closest_marker("gpu_image")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if not item.get_closest_marker("gpu_image")]


SKIP_REASON = "container tier: dockerd cannot run here: "
SKIP_SITE = (str(Path(__file__)), sys._getframe().f_lineno - 1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Where dockerd cannot run, every test of the tier skips for the one reason; give them
    one location too, so the summary says it in one line."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
        if SKIP_REASON in reason:
            report.longrepr = (*SKIP_SITE, reason)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(running_engine())
        except CannotRun as reason:
            pytest.skip(f"{SKIP_REASON}{reason}")
        yield started


@pytest.fixture(scope="session")
def python_base(engine: Engine) -> str:
    """The base image the Dockerfile's PYTHON_IMAGE argument gets."""
    return engine.import_standin("python", PYTHON_RECIPE, PYTHON_CHANGES, PYTHON_STANDIN, ca=True)


@pytest.fixture(scope="session")
def nginx_image(engine: Engine) -> str:
    """The load balancer's image as docker-compose.yml names it: pulled where a registry is
    reachable, else a stand-in from Debian's nginx under the same name."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    tag: str = compose["x-lb"]["image"]
    if engine.run("pull", tag, check=False, timeout=300).returncode != 0:
        engine.import_standin("nginx", NGINX_RECIPE, NGINX_CHANGES, tag)
    return tag


@pytest.fixture(scope="session")
def builder(engine: Engine, python_base: str, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Compose with the build override: `docker compose build` makes the images, as
    docs/deploy.md says to (the classic builder caches per client, so every build of the tier
    goes through this one client and reuses the layers of the others)."""
    folder = tmp_path_factory.mktemp("compose-build")
    return Project(engine, "igbuild", folder, {}, build_override([CPU_SERVICE, "api"], python_base))


@pytest.fixture(scope="session")
def cpu_image(engine: Engine, builder: Project) -> BuiltImage:
    started = time.monotonic()
    builder.run("--profile", "cpu", "build", CPU_SERVICE, timeout=1500)
    seconds = time.monotonic() - started
    assert builder.config()["services"][CPU_SERVICE]["image"] == CPU_TAG
    engine.inspect("image", CPU_TAG)
    return BuiltImage(CPU_TAG, seconds)


@pytest.fixture(scope="session")
def checkout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`imagegen serve` from this checkout on the shipped models: the bytes to match."""
    log = tmp_path_factory.mktemp("checkout") / "server.log"
    # The service's own thread default, as in the containers.
    server = launch(ROOT / "models", log, intra_op_threads=0)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
