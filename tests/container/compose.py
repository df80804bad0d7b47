"""docker compose on the shipped docker-compose.yml, in the private daemon.

The project directory is the checkout itself (so `./models`, `./deploy/nginx/nginx.conf` and
the build context are the real ones); the only additions are a `.env` in a temporary folder
(`--env-file`) and an override that points the build at the stand-in base and the host network.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.container.engine import COMPOSE_FILE, ROOT, Engine, run_checked

HEALTHY_TIMEOUT_S = 180.0


def compose_flavour(engine: Engine) -> list[str]:
    """What `make test` installs: Debian's docker-compose (v1, Python); else the v2 plugin."""
    v1 = shutil.which("docker-compose")
    if v1 is not None:
        return [v1]
    if engine.run("compose", "version", check=False).returncode == 0:
        return [engine.docker, "compose"]
    raise AssertionError("needs docker-compose (Debian's package: make system-deps)")


def build_override(services: list[str], base_image: str) -> str:
    """The only change to the shipped file: the stand-in base, and the host network for the
    build (the private daemon has no bridge)."""
    build = {"args": {"PYTHON_IMAGE": base_image}, "network": "host"}
    return yaml.safe_dump({"services": {name: {"build": build} for name in services}})


@dataclass
class Project:
    engine: Engine
    name: str
    folder: Path
    env: dict[str, str]
    override: str
    flavour: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flavour = compose_flavour(self.engine)
        lines = [f"{key}={value}" for key, value in self.env.items()]
        (self.folder / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.folder / "override.yml").write_text(self.override, encoding="utf-8")

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [
            *self.flavour,
            "--project-directory",
            str(ROOT),
            "--project-name",
            self.name,
            "--env-file",
            str(self.folder / ".env"),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(self.folder / "override.yml"),
            *args,
        ]
        return run_checked(
            command,
            self.engine.env,
            what=f"compose {' '.join(args)}",
            timeout=timeout,
            check=check,
            cwd=ROOT,
        )

    def config(self) -> dict[str, Any]:
        resolved: dict[str, Any] = yaml.safe_load(self.run("config").stdout)
        return resolved

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).stdout.split()

    def state(self, container: str) -> dict[str, Any]:
        state: dict[str, Any] = self.engine.inspect("container", container)["State"]  # type: ignore[assignment]
        return state

    def wait_healthy(self, service: str, count: int = 1) -> list[str]:
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while True:
            ids = self.containers(service)
            states = [self.state(i) for i in ids]
            health = [s.get("Health", {}).get("Status") for s in states]
            if len(ids) == count and health == ["healthy"] * count:
                return ids
            if time.monotonic() > deadline or any(not s["Running"] for s in states):
                raise AssertionError(f"{service}: {health}\n{self.logs(service)}")
            time.sleep(0.5)

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", "--timestamps", service, check=False).stdout

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def log_time(line: str) -> float:
    """The time docker stamped on a `logs --timestamps` line (after compose's `name | `)."""
    stamp = line.split("| ", 1)[-1].split(" ", 1)[0]
    # RFC 3339 with nanoseconds: keep microseconds for fromisoformat.
    head, _, rest = stamp.partition(".")
    fraction = rest.rstrip("Z")[:6]
    return datetime.fromisoformat(f"{head}.{fraction}+00:00").timestamp()


@dataclass
class Answer:
    key: tuple[str, int]
    started: float
    done: float
    status: int | None
    body: bytes
    error: str | None = None


RequestSpec = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


def spec_for(key: tuple[str, int], model: str) -> RequestSpec:
    kind, seed = key
    if kind == "image":
        return ("GET", f"/v1/models/{model}/images/{seed}.png", None)
    if kind == "generate":
        return ("POST", f"/v1/models/{model}/generate", {"seed": seed})
    return ("POST", f"/v1/models/{model}/generate/batch", {"seed": seed, "count": 64})


def in_turn(keys: set[tuple[str, int]]) -> Callable[[int], tuple[str, int] | None]:
    """Each key once, in order."""
    ordered = sorted(keys)
    return lambda n: ordered[n] if n < len(ordered) else None


async def send(http: httpx.AsyncClient, key: tuple[str, int], model: str) -> Answer:
    method, path, body = spec_for(key, model)
    started = time.time()
    try:
        response = await http.request(method, path, json=body, headers={"accept": "image/png"})
    except httpx.TransportError as error:
        return Answer(key, started, time.time(), None, b"", repr(error))
    return Answer(key, started, time.time(), response.status_code, response.content)


async def drive(
    url: str,
    keys: Callable[[int], tuple[str, int] | None],
    model: str,
    clients: int,
    headers: dict[str, str],
    after_answers: tuple[int, Callable[[], Awaitable[None]]] | None = None,
    stop_on_failure: bool = False,
) -> list[Answer]:
    """`clients` concurrent clients take request keys from `keys(n)` until it gives None; after
    `after_answers[0]` answers, `after_answers[1]` runs once alongside them."""
    answers: list[Answer] = []
    counter = 0
    enough = asyncio.Event()
    finished = asyncio.Event()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal counter
        while not finished.is_set():
            key = keys(counter)
            counter += 1
            if key is None:
                return
            answer = await send(http, key, model)
            answers.append(answer)
            if after_answers and len(answers) >= after_answers[0]:
                enough.set()
            if stop_on_failure and answer.status != 200:
                return

    async def side_job() -> None:
        if after_answers is None:
            return
        await enough.wait()
        await after_answers[1]()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as http:
        tasks = [asyncio.ensure_future(client(http)) for _ in range(clients)]
        job = asyncio.ensure_future(side_job())
        await asyncio.gather(*tasks)
        finished.set()
        enough.set()
        await job
    return answers


def reference(server_url: str, keys: set[tuple[str, int]], model: str) -> dict[Any, bytes]:
    """The checkout's server's answer to each request."""

    async def fetch() -> dict[Any, bytes]:
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as http:
            answers = [await send(http, key, model) for key in sorted(keys)]
        assert all(a.status == 200 for a in answers), [a for a in answers if a.status != 200]
        return {a.key: a.body for a in answers}

    return asyncio.run(fetch())


def dump(answers: list[Answer]) -> str:
    return json.dumps(
        [
            {"key": a.key, "started": a.started, "done": a.done, "status": a.status, "e": a.error}
            for a in answers
        ]
    )[:4000]
