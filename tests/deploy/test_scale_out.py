"""The scaled-out deployment on loopback: two real `imagegen serve` processes behind a real
nginx running deploy/nginx/nginx.conf (only the upstream addresses and the listen port
substituted). Under load one replica is killed or stopped; every request must still get a 200
with the right bytes, and nginx's log must show the failed ones retried on the other replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnx
import pytest

from service.imaging import encode_png
from service.runtime.card import CARD_FILENAME, ONNX_FILENAME
from tests.deploy.test_dockerfile import healthcheck_command
from tests.service.conftest import build_generator, card_for
from tests.service.helpers import reference_for_seed

pytestmark = [pytest.mark.deploy, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODEL = "tiny-gan"
START_TIMEOUT_S = 120.0
REQUESTS = 240
CONCURRENCY = 6
STOP_AFTER = 60  # answers received before one replica goes
UPSTREAM_LINE = re.compile(r"^([ \t]*)server[ \t]+replica:8000([ \t][^;]*)?;[ \t]*$", re.MULTILINE)
LISTEN_LINE = re.compile(r"^([ \t]*)listen[ \t]+8080;[ \t]*$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / MODEL
    folder.mkdir(parents=True)
    model = build_generator(latent_dim=16, height=8, width=8, channels=3, conv=True)
    onnx.save(model, str(folder / ONNX_FILENAME))
    card = card_for(MODEL, model, folder / ONNX_FILENAME)
    (folder / CARD_FILENAME).write_text(json.dumps(card), encoding="utf-8")
    return folder.parent


@dataclass
class Replica:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_replica(models_dir: Path, log: Path) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    command = [sys.executable, "-m", "service", "serve", "--models-dir", str(models_dir)]
    command += ["--port", str(port), "--grpc-port", "0", "--providers", "cpu"]
    command += ["--intra-op-threads", "1"]
    command += ["--max-batch-delay-ms", "2", "--shutdown-grace-s", "10", "--log-level", "info"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    return Replica(port, process, log)


def wait_ready(url: str, process: subprocess.Popen[bytes], describe: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{describe} exited early with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{describe} did not become ready")


def nginx_config(upstreams: list[str], listen: str) -> str:
    """deploy/nginx/nginx.conf with only the upstream servers and the listen address changed."""
    original = NGINX_CONF.read_text(encoding="utf-8")
    server = UPSTREAM_LINE.search(original)
    assert server is not None and len(UPSTREAM_LINE.findall(original)) == 1
    indent, parameters = server[1], server[2] or ""
    servers = "\n".join(f"{indent}server {address}{parameters};" for address in upstreams)
    config, replaced = UPSTREAM_LINE.subn(servers, original)
    config, listened = LISTEN_LINE.subn(rf"\g<1>listen {listen};", config)
    assert (replaced, listened) == (1, 1)
    return config


def test_only_addresses_and_ports_are_substituted() -> None:
    original = NGINX_CONF.read_text(encoding="utf-8").splitlines()
    config = nginx_config(["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:3").splitlines()
    changed = [line for line in config if line not in original]
    assert [line.strip() for line in changed] == [
        "server 127.0.0.1:1 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:2 max_fails=1 fail_timeout=5s;",
        "listen 127.0.0.1:3;",
    ]
    assert len(config) == len(original) + 1


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    url: str
    access_log: Path
    error_log: Path

    def log_lines(self) -> list[str]:
        return self.access_log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).is_file():
        pytest.fail("needs Debian's nginx-light: make system-deps")
    return binary


def start_nginx(binary: str, prefix: Path, upstreams: list[str]) -> Nginx:
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(upstreams, f"127.0.0.1:{port}"), encoding="utf-8")
    access_log, error_log = prefix / "access.log", prefix / "error.log"
    command = [binary, "-p", str(prefix), "-e", str(error_log), "-c", str(conf)]
    command += ["-g", f"daemon off; pid {prefix / 'nginx.pid'};"]
    with access_log.open("wb") as stdout, (prefix / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", process, "nginx")
    except AssertionError:
        process.kill()
        raise AssertionError(error_log.read_text() if error_log.exists() else "") from None
    return Nginx(process, url, access_log, error_log)


@pytest.fixture
def cluster(
    models_dir: Path, tmp_path: Path, nginx_binary: str
) -> Iterator[tuple[list[Replica], Nginx]]:
    replicas = [start_replica(models_dir, tmp_path / f"replica-{i}.log") for i in range(2)]
    nginx: Nginx | None = None
    try:
        for replica in replicas:
            url = f"http://{replica.address}/readyz"
            try:
                wait_ready(url, replica.process, f"replica {replica.address}")
            except AssertionError as error:
                raise AssertionError(f"{error}\n{replica.output()}") from None
        nginx = start_nginx(nginx_binary, tmp_path / "nginx", [r.address for r in replicas])
        yield replicas, nginx
    finally:
        processes = [r.process for r in replicas] + ([nginx.process] if nginx else [])
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@dataclass
class Answer:
    seed: int
    status: int
    body: bytes


async def drive_load(
    nginx_url: str, victim: Replica, stop_signal: signal.Signals
) -> tuple[list[Answer], float]:
    """REQUESTS requests (POST generate and GET images/{seed}.png in turn) from CONCURRENCY
    clients; after STOP_AFTER answers the victim gets `stop_signal`. Answers, and when."""
    answers: list[Answer] = []
    seeds: asyncio.Queue[int] = asyncio.Queue()
    for seed in range(REQUESTS):
        seeds.put_nowait(seed)
    enough = asyncio.Event()
    stopped_at = 0.0

    async def client(http: httpx.AsyncClient) -> None:
        while not seeds.empty():
            seed = seeds.get_nowait()
            if seed % 2:
                response = await http.get(f"/v1/models/{MODEL}/images/{seed}.png")
            else:
                response = await http.post(f"/v1/models/{MODEL}/generate", json={"seed": seed})
            answers.append(Answer(seed, response.status_code, response.content))
            if len(answers) >= STOP_AFTER:
                enough.set()

    async def stop_one() -> None:
        nonlocal stopped_at
        await enough.wait()
        stopped_at = time.monotonic()
        victim.process.send_signal(stop_signal)

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=nginx_url, timeout=60, limits=limits) as http:
        await asyncio.gather(stop_one(), *(client(http) for _ in range(CONCURRENCY)))
    return answers, stopped_at


@dataclass
class LogLine:
    request: str
    status: int
    upstreams: list[str]
    upstream_statuses: list[str]


def parse_access_log(lines: list[str]) -> list[LogLine]:
    pattern = re.compile(
        r'"(?P<request>[^"]*)" (?P<status>\d{3}) .*upstream=\[(?P<up>[^\]]*)\] '
        r"upstream_status=\[(?P<ups>[^\]]*)\]"
    )
    parsed = []
    for line in lines:
        match = pattern.search(line)
        assert match is not None, f"unexpected log line: {line}"
        parsed.append(
            LogLine(
                request=match["request"],
                status=int(match["status"]),
                upstreams=[a.strip() for a in match["up"].split(",") if a.strip()],
                upstream_statuses=[s.strip() for s in match["ups"].split(",") if s.strip()],
            )
        )
    return parsed


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
def test_a_replica_going_away_under_load_loses_no_request(
    cluster: tuple[list[Replica], Nginx], models_dir: Path, stop_signal: signal.Signals
) -> None:
    replicas, nginx = cluster
    survivor, victim = replicas
    references = {
        seed: encode_png(reference_for_seed(models_dir / MODEL, seed)) for seed in range(REQUESTS)
    }

    answers, _ = asyncio.run(drive_load(nginx.url, victim, stop_signal))

    # Every request has an answer, a 200, with exactly the reference image's bytes.
    assert sorted(answer.seed for answer in answers) == list(range(REQUESTS))
    failed = [(a.seed, a.status, a.body[:200]) for a in answers if a.status != 200]
    assert not failed, failed
    wrong = [a.seed for a in answers if a.body != references[a.seed]]
    assert not wrong, f"bytes differ from the reference for seeds {wrong}"
    victim.process.wait(timeout=60)
    if stop_signal == signal.SIGTERM:
        assert victim.process.returncode == 0, victim.output()  # drained, then a clean exit

    # nginx writes its log line when a request ends; SIGQUIT stops it gracefully.
    nginx.process.send_signal(signal.SIGQUIT)
    nginx.process.wait(timeout=30)
    lines = [
        line
        for line in parse_access_log(nginx.log_lines())
        if f"/v1/models/{MODEL}/" in line.request
    ]
    assert len(lines) == REQUESTS
    assert all(line.status == 200 for line in lines)
    finals = [line.upstreams[-1] for line in lines]
    assert finals.count(victim.address) > 0, "the victim never served: no load was balanced"
    assert finals.count(survivor.address) > 0
    # Requests that hit the victim as it went were retried on the survivor, and succeeded there.
    retried = [line for line in lines if len(line.upstreams) > 1]
    assert retried, "no request was retried on the other replica"
    for line in retried:
        assert line.upstreams == [victim.address, survivor.address], line
        assert line.upstream_statuses[-1] == "200", line
    if stop_signal == signal.SIGKILL:
        # A killed replica answers nothing more; a stopped one finishes what it had.
        assert all(status != "200" for line in retried for status in line.upstream_statuses[:-1])


def test_health_checks_of_the_image_and_compose_report_readiness(
    cluster: tuple[list[Replica], Nginx],
) -> None:
    """The Dockerfile's HEALTHCHECK and compose's healthcheck, run as written, pass against a
    ready replica and fail against one that is gone."""
    import yaml

    replicas, _ = cluster
    ready, gone = replicas
    gone.process.kill()
    gone.process.wait(timeout=30)
    image_check = healthcheck_command()
    compose_check = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["x-service"][
        "healthcheck"
    ]["test"]
    assert compose_check[:2] == ["CMD", "python"]
    for replica, expected in ((ready, 0), (gone, 1)):
        env = {"IMAGEGEN_PORT": str(replica.port), "PATH": os.environ.get("PATH", "")}
        result = subprocess.run(
            [sys.executable, *image_check[1:]], env=env, capture_output=True, timeout=60
        )
        assert (result.returncode != 0) == bool(expected), result.stderr
        script = compose_check[-1].replace(":8000/", f":{replica.port}/")
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, timeout=60
        )
        assert (result.returncode != 0) == bool(expected), result.stderr
