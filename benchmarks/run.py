"""The throughput benchmark: the service against the hardware limit and its peers, in one run.

    python -m benchmarks.run [--models-dir models] [--model fashion-gan] [--short]

Side by side, on one model, in one run:
1. the limit: raw onnxruntime images/s in this process at batch 1, 8 and 64, with and
   without PNG encoding (the service's session options; at batch 64 also onnxruntime's
   defaults, and the better of the two is the limit);
2. the service with batching (its default settings): the single endpoint at 1 and 32
   concurrent clients, and the batch endpoint (64 images a request, 4 clients);
3. the same service with batching off (`--max-batch-size 1`), and with `--workers 2`;
4. its peers on the same ONNX file (benchmarks/peers): a naive FastAPI server (one
   `session.run` per request) and LitServe (batches of 32, 2 ms), at 1 and 32 clients.

Each server runs in its own process on a free port, and each load as `imagegen loadtest` in
another (the tool's own ceiling against /healthz is measured in a run of its own). Per step
it records the server's CPU, and the event loop's CPU per request: the main threads' CPU
seconds over the requests served in the run (warm-up included). It prints a table, checks
the targets, and writes the table with the machine (cores, CPU model, load) and the exact
commands into docs/benchmarks.md between the `throughput` markers, keeping the rest of the
file. `--short` is a smoke run of a few seconds per step; it writes the docs only when
`--docs` is given.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.md"
RAW_BATCHES = (1, 8, 64)
START_TIMEOUT_S = 120.0

# The targets (issue 10), as ratios or bounds.
TARGET_SINGLE_32_OF_RAW = 0.75
STRETCH_SINGLE_32_OF_RAW = 0.85
TARGET_SINGLE_32_P99_MS = 100.0
TARGET_SINGLE_32_OF_NAIVE = 1.5
TARGET_BATCH_OF_RAW = 0.9
TARGET_LOOP_US_PER_REQUEST = 150.0


@dataclass(frozen=True)
class Plan:
    """How long each part runs."""

    raw_seconds: float  # per raw configuration
    duration_s: float  # measured seconds per load step
    warmup_s: float
    ceiling: bool = True


FULL = Plan(raw_seconds=5.0, duration_s=20.0, warmup_s=3.0)
SHORT = Plan(raw_seconds=0.5, duration_s=2.0, warmup_s=0.5)


# -- the machine ------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    import onnxruntime

    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": cpu_model(),
        "load_average_1m": round(load[0], 2),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(terse=True),
    }


# -- 1. the limit: raw onnxruntime in this process ---------------------------------------------


@dataclass
class RawResult:
    label: str
    batch: int
    png: bool
    images_per_s: float  # batch / median call time: robust to a stray preemption
    median_call_ms: float  # one generate (+ PNG) call of `batch` images
    mean_images_per_s: float  # batch / mean call time


def measure_raw(
    generate: Callable[[np.ndarray], np.ndarray],
    latent_dim: int,
    batch: int,
    png: bool,
    seconds: float,
    label: str,
) -> RawResult:
    """Images/s of `generate` (latents -> uint8 images), then PNG-encoding each, if asked."""
    from service.imaging import encode_png

    rng = np.random.default_rng(batch)
    latents = rng.standard_normal((batch, latent_dim), dtype=np.float32)
    for _ in range(3):  # warm-up
        generate(latents)
    calls: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(calls) < 5:
        started = time.perf_counter()
        images = generate(latents)
        if png:
            for image in images:
                encode_png(image)
        calls.append(time.perf_counter() - started)
    return RawResult(
        label=label,
        batch=batch,
        png=png,
        images_per_s=batch / statistics.median(calls),
        median_call_ms=statistics.median(calls) * 1000.0,
        mean_images_per_s=batch * len(calls) / sum(calls),
    )


def raw_limit(model_dir: Path, plan: Plan, log: Callable[[str], None]) -> list[RawResult]:
    import onnxruntime as ort

    from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, ModelCard
    from service.runtime.providers import plan_providers
    from service.runtime.session import ImageGenerator, create_session

    card = ModelCard.load(model_dir / CARD_FILENAME)
    onnx_path = model_dir / ONNX_FILENAME
    service_generator = ImageGenerator(create_session(onnx_path, plan_providers("cpu"), 0), card)
    results = []
    for png in (False, True):
        for batch in RAW_BATCHES:
            what = "inference + PNG" if png else "inference"
            log(f"raw onnxruntime: {what}, batch {batch}")
            results.append(
                measure_raw(
                    service_generator.generate,
                    card.latent_dim,
                    batch,
                    png,
                    plan.raw_seconds,
                    label="service session options",
                )
            )
    # onnxruntime's own defaults (its pool threads spin between runs), for the limit only.
    default_session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    default_generator = ImageGenerator(default_session, card)
    log("raw onnxruntime: inference + PNG, batch 64, onnxruntime defaults")
    results.append(
        measure_raw(
            default_generator.generate,
            card.latent_dim,
            64,
            True,
            plan.raw_seconds,
            label="onnxruntime defaults",
        )
    )
    return results


# -- 2 and 3. the service under load ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shown(command: Sequence[str]) -> str:
    """A command as a person would type it: `imagegen ...` for `python -m service ...`."""
    parts = list(command)
    if parts[:3] == [sys.executable, "-m", "service"]:
        parts = ["imagegen", *parts[3:]]
    return shlex.join(parts)


def _cpu_s(stat_path: Path) -> float:
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of the process and all its descendants: their main
    threads (an ASGI server's event loop), and everything else (inference threads, pools)."""
    import psutil

    pids = [pid]
    with suppress(psutil.NoSuchProcess):
        pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    main_s = rest_s = 0.0
    for one in pids:
        try:
            main = _cpu_s(Path(f"/proc/{one}/task/{one}/stat"))
            rest_s += _cpu_s(Path(f"/proc/{one}/stat")) - main
            main_s += main
        except (OSError, IndexError):
            continue  # gone between the listing and the read
    return main_s, rest_s


@dataclass(frozen=True)
class Load:
    """One `imagegen loadtest` step against a running system."""

    endpoint: str  # "single" (POST generate) or "batch" (64 images a request)
    clients: int
    items: int = 1

    @property
    def options(self) -> list[str]:
        options = ["--endpoint", self.endpoint, "--concurrency", str(self.clients)]
        return options + (["--items", str(self.items)] if self.endpoint == "batch" else [])


@dataclass(frozen=True)
class System:
    """A server to measure: this service with some options, or a peer from benchmarks/peers."""

    name: str  # as the tables show it
    loads: tuple[Load, ...]
    serve_args: tuple[str, ...] = ()  # for the service: extra `imagegen serve` arguments
    peer: str | None = None  # for a peer: its module under benchmarks.peers
    event_loop_in_main_thread: bool = True  # False where the HTTP loop is not a main thread

    @property
    def is_service(self) -> bool:
        return self.peer is None


SINGLE_1 = Load("single", 1)
SINGLE_32 = Load("single", 32)
BATCH_4 = Load("batch", 4, items=64)
SERVICE = "imagegen, batching on"
BATCHING_OFF = "imagegen, batching off"
WORKERS_2 = "imagegen, 2 workers"
NAIVE = "naive FastAPI"
LITSERVE = "LitServe"
SYSTEMS = (
    System(SERVICE, (SINGLE_1, SINGLE_32, BATCH_4)),
    System(BATCHING_OFF, (SINGLE_1, SINGLE_32), serve_args=("--max-batch-size", "1")),
    System(WORKERS_2, (SINGLE_1, SINGLE_32), serve_args=("--workers", "2")),
    System(NAIVE, (SINGLE_1, SINGLE_32), peer="naive"),
    # LitServe answers HTTP in processes of its own, apart from the one it is started as.
    System(LITSERVE, (SINGLE_1, SINGLE_32), peer="litserve_peer", event_loop_in_main_thread=False),
)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    command: list[str]
    log_path: Path


def service_command(models_dir: Path, port: int, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--models-dir",
        str(models_dir),
        "--port",
        str(port),
        "--grpc-port",
        "0",  # HTTP is measured; the gRPC default port would clash between runs
        "--providers",
        "cpu",
        "--log-level",
        "warning",
        *extra,
    ]


def peer_command(peer: str, model_dir: Path, port: int) -> list[str]:
    module = f"benchmarks.peers.{peer}"
    return [sys.executable, "-m", module, "--model-dir", str(model_dir), "--port", str(port)]


@contextmanager
def running_server(
    models_dir: Path,
    extra: Sequence[str],
    log_dir: Path,
    name: str,
    poll_s: float = 0.1,
    command_for_port: Callable[[int], list[str]] | None = None,
) -> Iterator[Server]:
    """A ready server on a free port: `imagegen serve` with `extra`, or `command_for_port`."""
    port = free_port()
    if command_for_port is not None:
        command = command_for_port(port)
    else:
        command = service_command(models_dir, port, extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    log_path = log_dir / f"server-{name}.log"
    with log_path.open("wb") as log_file:
        # A session of its own, so the whole process group (LitServe's and the supervisor's
        # children too) is stopped at the end, not just the process we started.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, url, log_path, poll_s)
            yield Server(process, url, command, log_path)
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process's group, SIGKILL to what is left after 30 s."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # leftovers of the group, if any
    process.wait(timeout=10)


def wait_ready(
    process: subprocess.Popen[bytes], url: str, log_path: Path, poll_s: float = 0.1
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the server exited with status {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll_s)
    raise RuntimeError(f"the server at {url} was not ready within {START_TIMEOUT_S:g} s")


@dataclass
class LoadRun:
    """One `imagegen loadtest` invocation and what it reported."""

    system: str
    load: Load
    command: list[str]
    report: dict[str, Any]
    server_cores: float  # the server processes' CPU time over the run's wall time
    server_loop_cores: float | None  # of which their main threads: the event loop
    event_loop_us_per_request: float | None  # main-thread CPU per request served in the run

    @property
    def step(self) -> dict[str, Any]:
        step: dict[str, Any] = self.report["steps"][0]
        return step


def run_loadtest(
    server: Server, model: str, options: Sequence[str], plan: Plan, work_dir: Path
) -> tuple[list[str], dict[str, Any], float, tuple[float, float]]:
    """`imagegen loadtest` with `options`: its command, report, wall seconds and the server's
    (main-thread, other) CPU seconds over it."""
    out = work_dir / f"load-{len(list(work_dir.glob('load-*.json')))}.json"
    command = [
        sys.executable,
        "-m",
        "service",
        "loadtest",
        "--url",
        server.url,
        "--model",
        model,
        *options,
        "--no-progress",
        "--json",
        str(out),
    ]
    (loop_before, rest_before), wall_before = process_cpu_s(server.process.pid), time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    loop_after, rest_after = process_cpu_s(server.process.pid)
    wall_s = time.perf_counter() - wall_before
    if finished.returncode != 0:
        raise RuntimeError(
            f"{shown(command)} exited with {finished.returncode}:\n{finished.stderr[-2000:]}"
        )
    cpu = (loop_after - loop_before, rest_after - rest_before)
    return command, json.loads(out.read_text()), wall_s, cpu


def run_load(
    server: Server, system: System, load: Load, model: str, plan: Plan, work_dir: Path
) -> LoadRun:
    options = [
        *load.options,
        "--duration",
        f"{plan.duration_s:g}",
        "--warmup",
        f"{plan.warmup_s:g}",
        "--no-ceiling",
    ]
    command, report, wall_s, (loop_s, rest_s) = run_loadtest(server, model, options, plan, work_dir)
    step = report["steps"][0]
    # Requests served in the run: the measured window's rate over warm-up and window alike.
    served = step["requests_per_s"] * (plan.duration_s + plan.warmup_s)
    loop_known = system.event_loop_in_main_thread
    return LoadRun(
        system=system.name,
        load=load,
        command=command,
        report=report,
        server_cores=(loop_s + rest_s) / wall_s,
        server_loop_cores=loop_s / wall_s if loop_known else None,
        event_loop_us_per_request=loop_s / served * 1e6 if loop_known and served else None,
    )


def tool_ceiling(server: Server, model: str, plan: Plan, work_dir: Path) -> tuple[list[str], Any]:
    """The load-test tool's own ceiling (against /healthz, 32 clients), in a run of its own."""
    # The ceiling runs for min(duration, 5 s); the step after it is not used.
    options = [
        *SINGLE_32.options,
        "--duration",
        f"{min(plan.duration_s, 5.0):g}",
        "--warmup",
        f"{min(plan.warmup_s, 1.0):g}",
        "--ceiling",
    ]
    command, report, _, _ = run_loadtest(server, model, options, plan, work_dir)
    return command, report["tool_ceiling"]


# -- the table and the targets ----------------------------------------------------------------


@dataclass
class Outcome:
    machine: dict[str, Any]
    model: str
    models_dir: str
    plan: Plan
    raw: list[RawResult] = field(default_factory=list)
    loads: list[LoadRun] = field(default_factory=list)
    server_commands: dict[str, str] = field(default_factory=dict)
    ceiling: dict[str, Any] | None = None
    ceiling_command: list[str] = field(default_factory=list)
    checks: list[tuple[str, str, bool | None]] = field(default_factory=list)
    seconds: float = 0.0

    def run(self, system: str, load: Load) -> LoadRun | None:
        for run in self.loads:
            if run.system == system and run.load == load:
                return run
        return None

    def step(self, system: str, load: Load) -> dict[str, Any] | None:
        run = self.run(system, load)
        return run.step if run is not None else None

    def raw_figure(self, batch: int, png: bool) -> RawResult | None:
        found = [r for r in self.raw if r.batch == batch and r.png == png]
        return max(found, key=lambda r: r.images_per_s) if found else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "model": self.model,
            "models_dir": self.models_dir,
            "plan": vars(self.plan),
            "seconds": round(self.seconds, 1),
            "raw": [vars(r) for r in self.raw],
            "service": [
                {
                    "system": run.system,
                    "load": vars(run.load),
                    "command": shown(run.command),
                    "server_cores": round(run.server_cores, 3),
                    "server_event_loop_cores": None
                    if run.server_loop_cores is None
                    else round(run.server_loop_cores, 3),
                    "event_loop_us_per_request": None
                    if run.event_loop_us_per_request is None
                    else round(run.event_loop_us_per_request, 1),
                    "report": run.report,
                }
                for run in self.loads
            ],
            "tool_ceiling": self.ceiling,
            "server_commands": self.server_commands,
            "checks": [{"target": t, "measured": m, "met": ok} for t, m, ok in self.checks],
        }


def check_targets(outcome: Outcome) -> None:
    limit = outcome.raw_figure(64, True)
    single_32 = outcome.step(SERVICE, SINGLE_32)
    single_1 = outcome.step(SERVICE, SINGLE_1)
    batch_4 = outcome.step(SERVICE, BATCH_4)
    naive_32 = outcome.step(NAIVE, SINGLE_32)
    naive_1 = outcome.step(NAIVE, SINGLE_1)
    checks = outcome.checks
    run_32 = outcome.run(SERVICE, SINGLE_32)
    if run_32 is not None and run_32.event_loop_us_per_request is not None:
        loop_us = run_32.event_loop_us_per_request
        checks.append(
            (
                f"single endpoint, 32 clients: event loop <= {TARGET_LOOP_US_PER_REQUEST:g} us "
                "of CPU per request",
                f"{loop_us:.0f} us",
                loop_us <= TARGET_LOOP_US_PER_REQUEST,
            )
        )
    if limit and single_32:
        ratio = single_32["images_per_s"] / limit.images_per_s
        checks.append(
            (
                f"single endpoint, 32 clients >= {TARGET_SINGLE_32_OF_RAW} x raw+PNG at batch 64 "
                f"(stretch {STRETCH_SINGLE_32_OF_RAW})",
                f"{ratio:.2f} x ({single_32['images_per_s']:.0f} of "
                f"{limit.images_per_s:.0f} img/s)",
                ratio >= TARGET_SINGLE_32_OF_RAW,
            )
        )
        p99 = single_32["latency_ms"]["p99"]
        checks.append(
            (
                f"single endpoint, 32 clients: p99 <= {TARGET_SINGLE_32_P99_MS:g} ms",
                f"{p99:.1f} ms" if p99 is not None else "-",
                p99 is not None and p99 <= TARGET_SINGLE_32_P99_MS,
            )
        )
    if single_32 and naive_32 and naive_32["images_per_s"]:
        gain = single_32["images_per_s"] / naive_32["images_per_s"]
        checks.append(
            (
                f"single endpoint, 32 clients >= {TARGET_SINGLE_32_OF_NAIVE} x the naive peer",
                f"{gain:.2f} x",
                gain >= TARGET_SINGLE_32_OF_NAIVE,
            )
        )
    ours = single_1["latency_ms"]["p50"] if single_1 else None
    theirs = naive_1["latency_ms"]["p50"] if naive_1 else None
    if ours is not None and theirs is not None:
        checks.append(
            (
                "one client: median <= the naive peer's median",
                f"{ours:.2f} vs {theirs:.2f} ms",
                ours <= theirs,
            )
        )
    if limit and batch_4:
        ratio = batch_4["images_per_s"] / limit.images_per_s
        checks.append(
            (
                f"batch endpoint (64 x 4 clients) >= {TARGET_BATCH_OF_RAW} x raw+PNG at batch 64",
                f"{ratio:.2f} x ({batch_4['images_per_s']:.0f} img/s)",
                ratio >= TARGET_BATCH_OF_RAW,
            )
        )


def _f(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render_markdown(outcome: Outcome, rerun: str) -> str:
    m = outcome.machine
    lines = [
        "## Throughput against the hardware limit",
        "",
        f"Model `{outcome.model}` from `{outcome.models_dir}`; "
        f"{_f(outcome.plan.duration_s, 0)} s measured per step after {outcome.plan.warmup_s:g} s "
        f"of warm-up; the benchmark took {outcome.seconds:.0f} s.",
        "",
        f"Machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu_model']}; "
        f"load average {m['load_average_1m']} at the start; Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, {m['platform']}. "
        "The load generator runs on the same machine as the server.",
        "",
        "### The limit: raw onnxruntime in one process",
        "",
        "Images/s from the median call (latents to uint8 images, then a PNG per image when "
        "asked); the service's session options, and at batch 64 also onnxruntime's defaults. "
        "The better batch-64 figure with PNG is the limit the targets use.",
        "",
        "| batch | session options | images/s | images/s with PNG | median ms per call, with PNG |",
        "|---:|---|---:|---:|---:|",
    ]
    for batch in RAW_BATCHES:
        plain = [r for r in outcome.raw if r.batch == batch and not r.png]
        with_png = [r for r in outcome.raw if r.batch == batch and r.png]
        for png_result in with_png:
            twin = [r for r in plain if r.label == png_result.label]
            lines.append(
                f"| {batch} | {png_result.label} | "
                f"{_f(twin[0].images_per_s) if twin else '-'} | "
                f"{_f(png_result.images_per_s)} | {png_result.median_call_ms:.2f} |"
            )
    lines += [
        "",
        "### The service and its peers over HTTP",
        "",
        "Closed loop over keep-alive connections, fresh seeds per request; latency from "
        "request sent to response read, at the client. Mean batch and queue wait come from the "
        "server's `/metrics` before and after each step (the peers have none). Server cores "
        "are the server processes' CPU time over the `imagegen loadtest` run; event loop us "
        "is their main threads' CPU time (the asyncio loop: HTTP, routing, validation, "
        "batching) per request served in the run, warm-up included (LitServe answers HTTP in "
        "processes of its own: not measured). Tool cores are the load generator's. "
        f"Peers: {NAIVE} is `benchmarks/peers/naive.py` (a `def` route, one `session.run` per "
        f"request); {LITSERVE} is `benchmarks/peers/litserve_peer.py` (batches of 32, 2 ms). "
        "Both use onnxruntime's default session options.",
        "",
        "| system | endpoint | clients | req/s | images/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | mean batch | queue wait ms | server cores | event loop us/request "
        "| tool cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in outcome.loads:
        step = run.step
        latency = step["latency_ms"]
        server = step["server"]
        errors = ", ".join(f"{k}: {v}" for k, v in step["errors"].items()) or "0"
        endpoint = step["endpoint"]
        if step["items_per_request"] > 1:
            endpoint += f" ({step['items_per_request']} images)"
        lines.append(
            f"| {run.system} | {endpoint} | {int(step['level'])} | "
            f"{_f(step['requests_per_s'])} | {_f(step['images_per_s'])} | "
            f"{_f(latency['p50'], 2)} | {_f(latency['p90'], 2)} | {_f(latency['p99'], 2)} | "
            f"{_f(latency['max'], 1)} | {errors} | {_f(server['mean_batch_size'], 1)} | "
            f"{_f(server['mean_queue_wait_ms'], 2)} | {run.server_cores:.2f} | "
            f"{_f(run.event_loop_us_per_request)} | {_f(step['client_cpu_cores'], 2)} |"
        )
    ceiling = outcome.ceiling
    if ceiling:
        lines += [
            "",
            f"The load-test tool's own ceiling on this machine: {_f(ceiling['requests_per_s'])} "
            f"requests/s against `/healthz` at {int(ceiling['level'])} clients (p50 "
            f"{_f(ceiling['latency_ms']['p50'], 2)} ms), using "
            f"{_f(ceiling['client_cpu_cores'], 2)} cores.",
        ]
    lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in outcome.checks:
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    lines += ["", "### Commands", "", "```"]
    for name, command in outcome.server_commands.items():
        lines.append(f"# server, {name}")
        lines.append(command)
    if outcome.ceiling_command:
        lines.append("# the tool's ceiling")
        lines.append(shown(outcome.ceiling_command))
    for run in outcome.loads:
        lines.append(f"# load, {run.system}")
        lines.append(shown(run.command))
    lines += ["```", "", f"Rerun all of it: `{rerun}`.", ""]
    return "\n".join(lines)


def write_section(doc: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the markers (or append it), keeping the rest of the file."""
    old = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new, encoding="utf-8")


def print_summary(outcome: Outcome) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    raw = Table(title="the limit: raw onnxruntime in-process", title_justify="left")
    for column in ("batch", "session options", "PNG", "images/s", "median ms/call"):
        raw.add_column(column, justify="right")
    for r in outcome.raw:
        raw.add_row(
            str(r.batch),
            r.label,
            "yes" if r.png else "no",
            _f(r.images_per_s),
            f"{r.median_call_ms:.2f}",
        )
    console.print(raw)
    service = Table(title="the service and its peers over HTTP", title_justify="left")
    for column in (
        "system",
        "endpoint",
        "clients",
        "req/s",
        "img/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "batch",
        "queue ms",
        "server cores",
        "loop us/req",
        "tool cores",
    ):
        service.add_column(column, justify="right")
    for run in outcome.loads:
        step = run.step
        service.add_row(
            run.system,
            step["endpoint"],
            str(int(step["level"])),
            _f(step["requests_per_s"]),
            _f(step["images_per_s"]),
            _f(step["latency_ms"]["p50"], 2),
            _f(step["latency_ms"]["p99"], 2),
            ", ".join(f"{k}: {v}" for k, v in step["errors"].items()) or "0",
            _f(step["server"]["mean_batch_size"], 1),
            _f(step["server"]["mean_queue_wait_ms"], 2),
            f"{run.server_cores:.2f}",
            _f(run.event_loop_us_per_request),
            _f(step["client_cpu_cores"], 2),
        )
    console.print(service)
    if outcome.ceiling:
        console.print(
            f"tool ceiling: {_f(outcome.ceiling['requests_per_s'])} req/s against /healthz at "
            f"{int(outcome.ceiling['level'])} clients, "
            f"{_f(outcome.ceiling['client_cpu_cores'], 2)} cores"
        )
    targets = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "met"):
        targets.add_column(column)
    for target, measured, met in outcome.checks:
        targets.add_row(target, measured, "yes" if met else "[red]no[/red]")
    console.print(targets)


# -- the command ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", default="fashion-gan", help="Model to benchmark.")
    parser.add_argument("--short", action="store_true", help="A smoke run of a few seconds/step.")
    parser.add_argument("--duration", type=float, help="Measured seconds per load step.")
    parser.add_argument("--warmup", type=float, help="Warm-up seconds per load step.")
    parser.add_argument(
        "--docs",
        type=Path,
        help=f"Markdown file for the results [{DEFAULT_DOCS.relative_to(ROOT)}; "
        "not written by --short unless given].",
    )
    parser.add_argument("--no-docs", action="store_true", help="Print only.")
    parser.add_argument("--json", type=Path, help="Also write every figure as JSON.")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="Extra `imagegen serve` argument for both services, e.g. "
        "--server-arg=--max-batch-delay-ms=0 (repeatable).",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = SHORT if args.short else FULL
    if args.duration is not None or args.warmup is not None:
        plan = Plan(
            raw_seconds=plan.raw_seconds,
            duration_s=args.duration if args.duration is not None else plan.duration_s,
            warmup_s=args.warmup if args.warmup is not None else plan.warmup_s,
        )
    models_dir = args.models_dir
    model_dir = models_dir / args.model
    if not (model_dir / "model.json").is_file():
        print(
            f"benchmark: no model {args.model!r} in {models_dir} (expected {model_dir}/model.json)",
            file=sys.stderr,
        )
        return 2

    def log(message: str) -> None:
        print(f"[benchmark] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    outcome = Outcome(machine(), args.model, str(models_dir), plan)
    if outcome.machine["load_average_1m"] > 0.5 * (outcome.machine["usable_cores"] or 1):
        log(
            f"warning: load average {outcome.machine['load_average_1m']} on "
            f"{outcome.machine['usable_cores']} cores: the machine is busy, figures will be low"
        )
    outcome.raw = raw_limit(model_dir, plan, log)
    served_dir = models_dir.resolve()
    if served_dir.is_relative_to(ROOT):  # the servers run in ROOT: keep the commands short
        served_dir = served_dir.relative_to(ROOT)
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        work = Path(tmp)
        for system in SYSTEMS:
            log(f"starting {system.name}")
            serve_args = [*args.server_arg, *system.serve_args] if system.is_service else []
            command_for_port = None
            if system.peer is not None:
                peer = system.peer
                command_for_port = functools.partial(peer_command, peer, served_dir / args.model)
            with running_server(
                served_dir,
                serve_args,
                work,
                system.name.replace(" ", "-").replace(",", ""),
                command_for_port=command_for_port,
            ) as server:
                outcome.server_commands[system.name] = shown(server.command)
                if system.name == SERVICE and plan.ceiling:
                    log("load: the tool's own ceiling against /healthz")
                    outcome.ceiling_command, outcome.ceiling = tool_ceiling(
                        server, args.model, plan, work
                    )
                for load in system.loads:
                    log(f"load: {system.name}, {' '.join(load.options)}")
                    outcome.loads.append(run_load(server, system, load, args.model, plan, work))
    outcome.seconds = time.perf_counter() - started
    check_targets(outcome)
    print_summary(outcome)
    rerun = (
        "python -m benchmarks.run"
        + (f" --models-dir {models_dir}" if models_dir != Path("models") else "")
        + (f" --model {args.model}" if args.model != "fashion-gan" else "")
    )
    if args.duration is not None:
        rerun += f" --duration {args.duration:g}"
    if args.warmup is not None:
        rerun += f" --warmup {args.warmup:g}"
    rerun += "".join(f" --server-arg={shlex.quote(arg)}" for arg in args.server_arg)
    if args.short:
        rerun += " --short"
    docs = args.docs if args.docs is not None else (None if args.short else DEFAULT_DOCS)
    if docs is not None and not args.no_docs:
        write_section(docs, render_markdown(outcome, rerun))
        log(f"wrote {docs}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(outcome.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
