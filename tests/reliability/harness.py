"""Real server processes and a raw HTTP/1.1 client for the reliability tier.

The client speaks HTTP over asyncio sockets rather than through httpx, so the tests see
exactly what reached the wire: when a request was fully sent, whether the server said
`100 Continue` (it had read the request and started on it), and whether an answer came
back whole, cut short, or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

START_TIMEOUT_S = 90.0  # the machine is shared with a training job: start-up can be slow
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One `python -m service serve` process, its port and its log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def open_fds(self) -> int:
        return int(psutil.Process(self.process.pid).num_fds())

    def metrics(self) -> dict[str, float]:
        """The Prometheus samples as `{'name{labels}': value}`."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=30).text
        return parse_metrics(text)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited early ({self.process.returncode}):\n{self.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server did not become ready:\n{self.log()}")

    def terminate(self) -> float:
        """SIGTERM; the monotonic time it was sent."""
        sent_at = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        return sent_at

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def launch(
    models_dir: Path, log_path: Path, env: dict[str, str] | None = None, **settings: object
) -> Server:
    """Start the service on a free port with `settings` given as `IMAGEGEN_*` variables."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    options: dict[str, object] = {
        "models_dir": models_dir,
        "host": HOST,
        "port": port,
        "providers": "cpu",
        "intra_op_threads": 1,
        "log_level": "info",
        "grpc_port": 0,  # gRPC only where a test asks for it (on a free port)
    }
    options.update(settings)
    for name, value in options.items():
        environment[f"IMAGEGEN_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    environment.update(env or {})
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return Server(process=process, port=port, log_path=log_path)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        base, _, label_text = key.partition("{")
        if base != name:
            continue
        if all(f'{label}="{want}"' in label_text for label, want in labels.items()):
            total += value
    return total


def warnings_in(log: str) -> list[str]:
    """Log lines at WARNING or above, and tracebacks."""
    return [
        line
        for line in log.splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) or line.startswith("Traceback")
    ]


# -- raw HTTP/1.1 ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one request got. `status` is None when no answer came back at all."""

    started_at: float
    sent_at: float | None = None  # the whole request was written
    continued_at: float | None = None  # the server sent `100 Continue`
    done_at: float | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # why the exchange broke off, if it did
    complete: bool = False  # a whole response (body length as announced)

    @property
    def latency_s(self) -> float:
        assert self.done_at is not None
        return self.done_at - self.started_at


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def request(
    method: str,
    port: int,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    expect_continue: bool = False,
    timeout_s: float = 60.0,
) -> Outcome:
    """One request on its own connection (`Connection: close`); never raises for I/O."""
    outcome = Outcome(started_at=time.monotonic())
    streams: list[asyncio.StreamWriter] = []
    try:
        await asyncio.wait_for(
            _exchange(outcome, streams, method, port, path, body, headers, expect_continue),
            timeout_s,
        )
    except asyncio.TimeoutError:
        outcome.error = "timeout"
    except asyncio.IncompleteReadError as error:
        outcome.error = "no response" if outcome.status is None else "cut short"
        outcome.body = error.partial
    except OSError as error:  # refused, reset, broken pipe
        outcome.error = type(error).__name__
    finally:
        outcome.done_at = time.monotonic()
        for writer in streams:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return outcome


async def _exchange(
    outcome: Outcome,
    streams: list[asyncio.StreamWriter],
    method: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str] | None,
    expect_continue: bool,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    streams.append(writer)
    fields = {"Host": f"{HOST}:{port}", "Connection": "close"}
    if body or method in ("POST", "PUT"):
        fields["Content-Length"] = str(len(body))
        fields["Content-Type"] = "application/json"
    if expect_continue:
        fields["Expect"] = "100-continue"
    fields.update(headers or {})
    fields = {name: value for name, value in fields.items() if value}  # "" leaves a header out
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items()
    )
    writer.write(head.encode("latin-1") + b"\r\n")
    if expect_continue:
        await writer.drain()
        status, response_headers = await _read_head(reader)
        if status == 100:
            outcome.continued_at = time.monotonic()
            writer.write(body)
            await writer.drain()
            outcome.sent_at = time.monotonic()
            status, response_headers = await _read_head(reader)
    else:
        # Listen while sending: the server may answer early (413) and close while the body
        # is still going out; like httpx and requests, take the answer it sent.
        answer = asyncio.create_task(_read_head(reader))
        try:
            for start in range(0, len(body) or 1, 65536):
                if answer.done():
                    break
                writer.write(body[start : start + 65536])
                await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        outcome.sent_at = time.monotonic()
        status, response_headers = await answer
    outcome.status, outcome.headers = status, response_headers
    length = response_headers.get("content-length")
    outcome.body = await (reader.readexactly(int(length)) if length is not None else reader.read())
    outcome.complete = True


async def open_loop(
    rate_per_s: float, duration_s: float, send: Callable[[int], Awaitable[Outcome]]
) -> tuple[list[Outcome], float]:
    """Start request i at `i / rate_per_s` whatever the answers do; the outcomes and the rate
    really achieved (requests started per second)."""
    started = time.monotonic()
    tasks: list[asyncio.Task[Outcome]] = []
    index = 0
    while True:
        due = started + index / rate_per_s
        if due - started >= duration_s:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index)))
        index += 1
    elapsed = time.monotonic() - started
    return list(await asyncio.gather(*tasks)), len(tasks) / elapsed


async def closed_loop(
    concurrency: int, duration_s: float, send: Callable[[int], Awaitable[Outcome]]
) -> tuple[list[Outcome], float]:
    """`concurrency` clients each sending the next request when the last is answered; the
    outcomes and the completed-200 throughput (requests per second)."""
    started = time.monotonic()
    outcomes: list[Outcome] = []
    counter = iter(range(10**9))

    async def client() -> None:
        while time.monotonic() - started < duration_s:
            outcomes.append(await send(next(counter)))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    ok = sum(1 for outcome in outcomes if outcome.status == 200)
    return outcomes, ok / elapsed


def is_png(body: bytes) -> bool:
    return body.startswith(b"\x89PNG\r\n\x1a\n") and body.endswith(b"IEND\xaeB`\x82")
