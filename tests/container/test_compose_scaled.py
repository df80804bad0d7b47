"""`docker compose --profile scaled-cpu up -d lb-cpu` on the shipped compose file: two replicas
behind nginx (deploy/nginx/nginx.conf, mounted as compose says); one replica killed under load
and no request lost, every answer the checkout's bytes."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator

import pytest

from tests.container.compose import Project, build_override, drive, dump, reference
from tests.container.engine import BuiltImage, Engine
from tests.reliability.harness import Server, free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

REPLICAS = "replica-cpu"
LB = "lb-cpu"
MODEL = "fashion-gan"
REQUESTS = 240
CLIENTS = 6
KILL_AFTER = 60  # answers before one replica is killed


@pytest.fixture(scope="module")
def project(
    engine: Engine,
    cpu_image: BuiltImage,
    python_base: str,
    nginx_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Project]:
    env = {"IMAGEGEN_PUBLISHED_PORT": str(free_port()), "IMAGEGEN_API_KEY": secrets.token_hex(8)}
    project = Project(
        engine,
        "igscaled",
        tmp_path_factory.mktemp("compose-scaled"),
        env,
        build_override([REPLICAS], python_base),
    )
    try:
        project.run("--profile", "scaled-cpu", "up", "-d", LB, timeout=900)
        project.wait_healthy(REPLICAS, count=2)
        project.wait_healthy(LB)
        yield project
    finally:
        project.down()


def test_a_replica_killed_under_load_loses_no_request(
    project: Project, checkout_server: Server
) -> None:
    replicas = project.containers(REPLICAS)
    assert len(replicas) == 2
    url = f"http://127.0.0.1:{project.env['IMAGEGEN_PUBLISHED_PORT']}"
    headers = {"authorization": f"Bearer {project.env['IMAGEGEN_API_KEY']}"}

    def keys(n: int) -> tuple[str, int] | None:
        return ("image" if n % 2 else "generate", n) if n < REQUESTS else None

    async def kill_one() -> None:
        await asyncio.to_thread(project.engine.run, "kill", replicas[0])

    answers = asyncio.run(drive(url, keys, MODEL, CLIENTS, headers, (KILL_AFTER, kill_one)))
    assert len(answers) == REQUESTS
    lost = [a for a in answers if a.status != 200]
    assert not lost, dump(lost)
    expected = reference(checkout_server.base_url, {a.key for a in answers}, MODEL)
    assert [a.key for a in answers if a.body != expected[a.key]] == []
    # The kill mattered: nginx tried requests on the dead replica and sent them on.
    log = project.logs(LB)
    retried = re.findall(r"upstream=\[[^\]]*, [^\]]*\]", log)
    assert retried, log[-3000:]
    served_by = set(re.findall(r"upstream=\[([^\],]+)\] upstream_status=\[200\]", log))
    assert len(served_by) == 2, served_by  # both replicas served before the kill
