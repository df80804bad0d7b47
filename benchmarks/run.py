"""The throughput benchmark: the service against the hardware limit, in one command.

    python -m benchmarks.run [--models-dir models] [--model fashion-gan] [--short]

Side by side, on one model, in one run:
1. the limit: raw onnxruntime images/s in this process at batch 1, 8 and 64, with and
   without PNG encoding (the service's session options; at batch 64 also onnxruntime's
   defaults, and the better of the two is the limit);
2. the service with batching (its default settings): the single endpoint at 1 and 32
   concurrent clients, and the batch endpoint (64 images a request, 4 clients);
3. the same service with batching off (`--max-batch-size 1`).

Each service runs as `imagegen serve` in its own process on a free port, and each load as
`imagegen loadtest` in another (which also reports its own ceiling against /healthz and the
cores it used). It prints a table, checks the targets, and writes the table with the
machine (cores, CPU model, load) and the exact commands into docs/benchmarks.md between the
`throughput` markers, keeping the rest of the file. `--short` is a smoke run of a few
seconds per step; it writes the docs only when `--docs` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.md"
RAW_BATCHES = (1, 8, 64)
START_TIMEOUT_S = 120.0

# The targets, as (what, ratio or bound).
TARGET_SINGLE_32_OF_RAW = 0.85
TARGET_SINGLE_32_P99_MS = 100.0
TARGET_BATCH_OF_RAW = 0.9
TARGET_LONE_CLIENT_EXTRA_MS = 1.0
TARGET_BATCHING_GAIN = 1.3


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
    """CPU seconds (user + system) so far: the main thread (the event loop), and the rest
    (the inference thread, onnxruntime's pool, PNG workers) together."""
    main = _cpu_s(Path(f"/proc/{pid}/task/{pid}/stat"))
    return main, _cpu_s(Path(f"/proc/{pid}/stat")) - main


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    command: list[str]
    log_path: Path


@contextmanager
def running_server(
    models_dir: Path, extra: Sequence[str], log_dir: Path, name: str, poll_s: float = 0.1
) -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--models-dir",
        str(models_dir),
        "--port",
        str(port),
        "--providers",
        "cpu",
        "--log-level",
        "warning",
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    log_path = log_dir / f"server-{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, url, log_path, poll_s)
            yield Server(process, url, command, log_path)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
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

    scenario: str
    command: list[str]
    report: dict[str, Any]
    server_cores: float  # the server process's CPU time over the run's wall time
    server_loop_cores: float  # of which its main thread: the event loop (HTTP, PNG, batching)


def run_load(
    server: Server,
    scenario: str,
    model: str,
    options: Sequence[str],
    plan: Plan,
    work_dir: Path,
    ceiling: bool,
) -> LoadRun:
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
        "--duration",
        f"{plan.duration_s:g}",
        "--warmup",
        f"{plan.warmup_s:g}",
        "--ceiling" if ceiling else "--no-ceiling",
        "--no-progress",
        "--json",
        str(out),
    ]
    (loop_before, rest_before), wall_before = process_cpu_s(server.process.pid), time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    loop_after, rest_after = process_cpu_s(server.process.pid)
    wall_s = time.perf_counter() - wall_before
    loop_cores = (loop_after - loop_before) / wall_s
    server_cores = loop_cores + (rest_after - rest_before) / wall_s
    if finished.returncode != 0:
        raise RuntimeError(
            f"{shown(command)} exited with {finished.returncode}:\n{finished.stderr[-2000:]}"
        )
    report = json.loads(out.read_text())
    return LoadRun(scenario, command, report, server_cores, loop_cores)


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
    checks: list[tuple[str, str, bool | None]] = field(default_factory=list)
    seconds: float = 0.0

    def step(self, scenario: str, label: str) -> dict[str, Any] | None:
        for run in self.loads:
            if run.scenario == scenario:
                for step in run.report["steps"]:
                    if step["label"] == label:
                        found: dict[str, Any] = step
                        return found
        return None

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
                    "scenario": run.scenario,
                    "command": shown(run.command),
                    "server_cores": round(run.server_cores, 3),
                    "server_event_loop_cores": round(run.server_loop_cores, 3),
                    "report": run.report,
                }
                for run in self.loads
            ],
            "server_commands": self.server_commands,
            "checks": [{"target": t, "measured": m, "met": ok} for t, m, ok in self.checks],
        }


def check_targets(outcome: Outcome) -> None:
    limit = outcome.raw_figure(64, True)
    lone_raw = [r for r in outcome.raw if r.batch == 1 and r.png and r.label.startswith("service")]
    single_32 = outcome.step("batching on", "c=32")
    single_1 = outcome.step("batching on", "c=1")
    batch_4 = outcome.step("batch endpoint", "c=4")
    off_32 = outcome.step("batching off", "c=32")
    checks = outcome.checks
    if limit and single_32:
        ratio = single_32["images_per_s"] / limit.images_per_s
        checks.append(
            (
                f"single endpoint, 32 clients >= {TARGET_SINGLE_32_OF_RAW} x raw+PNG at batch 64",
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
    if limit and batch_4:
        ratio = batch_4["images_per_s"] / limit.images_per_s
        checks.append(
            (
                f"batch endpoint (64 x 4 clients) >= {TARGET_BATCH_OF_RAW} x raw+PNG at batch 64",
                f"{ratio:.2f} x ({batch_4['images_per_s']:.0f} img/s)",
                ratio >= TARGET_BATCH_OF_RAW,
            )
        )
    if lone_raw and single_1 and single_1["latency_ms"]["p50"] is not None:
        extra = single_1["latency_ms"]["p50"] - lone_raw[0].median_call_ms
        checks.append(
            (
                "one client: median <= raw batch-1 inference+PNG "
                f"+ {TARGET_LONE_CLIENT_EXTRA_MS:g} ms",
                f"+{extra:.2f} ms ({single_1['latency_ms']['p50']:.2f} vs "
                f"{lone_raw[0].median_call_ms:.2f} ms)",
                extra <= TARGET_LONE_CLIENT_EXTRA_MS,
            )
        )
    if single_32 and off_32 and off_32["images_per_s"]:
        gain = single_32["images_per_s"] / off_32["images_per_s"]
        checks.append(
            (
                f"batching on vs off at 32 clients >= {TARGET_BATCHING_GAIN} x",
                f"{gain:.2f} x",
                gain >= TARGET_BATCHING_GAIN,
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
        "### The service over HTTP",
        "",
        "Closed loop over keep-alive connections, fresh seeds per request; latency from "
        "request sent to response read, at the client. Mean batch and queue wait come from the "
        "server's `/metrics` before and after each step; server cores are the server "
        "process's CPU time over the `imagegen loadtest` run (in brackets its main thread's: "
        "the event loop, which does HTTP, routing, PNG encoding of small images and "
        "batching; the rest is inference), tool cores the load generator's.",
        "",
        "| scenario | endpoint | clients | req/s | images/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | mean batch | queue wait ms | server cores (event loop) | tool cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for run in outcome.loads:
        for step in run.report["steps"]:
            latency = step["latency_ms"]
            server = step["server"]
            errors = ", ".join(f"{k}: {v}" for k, v in step["errors"].items()) or "0"
            endpoint = step["endpoint"]
            if step["items_per_request"] > 1:
                endpoint += f" ({step['items_per_request']} images)"
            lines.append(
                f"| {run.scenario} | {endpoint} | {int(step['level'])} | "
                f"{_f(step['requests_per_s'])} | {_f(step['images_per_s'])} | "
                f"{_f(latency['p50'], 2)} | {_f(latency['p90'], 2)} | {_f(latency['p99'], 2)} | "
                f"{_f(latency['max'], 1)} | {errors} | {_f(server['mean_batch_size'], 1)} | "
                f"{_f(server['mean_queue_wait_ms'], 2)} | "
                f"{run.server_cores:.2f} ({run.server_loop_cores:.2f}) | "
                f"{_f(step['client_cpu_cores'], 2)} |"
            )
    ceilings = [run.report["tool_ceiling"] for run in outcome.loads if run.report["tool_ceiling"]]
    for ceiling in ceilings:
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
    for run in outcome.loads:
        lines.append(f"# load, {run.scenario}")
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
    service = Table(title="the service over HTTP", title_justify="left")
    for column in (
        "scenario",
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
        "event loop",
        "tool cores",
    ):
        service.add_column(column, justify="right")
    for run in outcome.loads:
        for step in run.report["steps"]:
            service.add_row(
                run.scenario,
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
                f"{run.server_loop_cores:.2f}",
                _f(step["client_cpu_cores"], 2),
            )
    console.print(service)
    for run in outcome.loads:
        ceiling = run.report["tool_ceiling"]
        if ceiling:
            console.print(
                f"tool ceiling: {_f(ceiling['requests_per_s'])} req/s against /healthz at "
                f"{int(ceiling['level'])} clients, {_f(ceiling['client_cpu_cores'], 2)} cores"
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
        single = ["--endpoint", "single", "--concurrency"]
        # One `imagegen loadtest` per step, so the server's CPU is measured per step too.
        scenarios: list[tuple[str, list[str], list[tuple[str, list[str], bool]]]] = [
            (
                "batching on",
                [],
                [
                    ("batching on", [*single, "1"], False),
                    # The tool's ceiling, at the busiest step's 32 clients, goes with it.
                    ("batching on", [*single, "32"], True),
                    (
                        "batch endpoint",
                        ["--endpoint", "batch", "--items", "64", "--concurrency", "4"],
                        False,
                    ),
                ],
            ),
            (
                "batching off",
                ["--max-batch-size", "1"],
                [
                    ("batching off", [*single, "1"], False),
                    ("batching off", [*single, "32"], False),
                ],
            ),
        ]
        for name, server_args, loads in scenarios:
            log(f"starting the service ({name})")
            server_args = [*args.server_arg, *server_args]
            with running_server(served_dir, server_args, work, name.replace(" ", "-")) as server:
                outcome.server_commands[name] = shown(server.command)
                for scenario, options, ceiling in loads:
                    log(f"load: {scenario} ({' '.join(options)})")
                    outcome.loads.append(
                        run_load(server, scenario, args.model, options, plan, work, ceiling)
                    )
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
