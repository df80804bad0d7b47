"""Showing and saving results: a live progress line, a rich table, JSON, CSV and a PNG chart.

rich and matplotlib are imported inside the functions that draw, so neither loads unless a
table or a chart is asked for.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from service.extras import install_hint
from service.loadtest.runner import PROGRESS_INTERVAL_S
from service.loadtest.stats import Recorder, StepResult, percentile

MIN_TABLE_WIDTH = 116  # narrower terminals wrap the table rather than truncate its numbers


class ProgressLine:
    """One line on a terminal, rewritten in place: step, time, rate and p50 of the last tick."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._last_requests = 0
        self._width = 0

    def update(
        self, label: str, elapsed_s: float, duration_s: float, recorder: Recorder, since: int
    ) -> None:
        if elapsed_s < 0:
            text = f"{label}: warming up {-elapsed_s:4.1f} s"
            self._last_requests = recorder.requests
        else:
            recent = sorted(recorder.latencies_s[since:])
            count = recorder.requests - self._last_requests
            self._last_requests = recorder.requests
            p50 = f"{percentile(recent, 50.0) * 1000.0:7.2f}" if recent else "      -"
            errors = sum(recorder.errors.values())
            text = (
                f"{label}: {min(elapsed_s, duration_s):5.1f}/{duration_s:g} s  "
                f"{count / PROGRESS_INTERVAL_S:8.0f} req/s  p50 {p50} ms  errors {errors}"
            )
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def done(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0
        self._last_requests = 0


@dataclass
class Report:
    """Everything a run produced: the target, the tool's ceiling and the steps."""

    target: dict[str, Any]
    steps: list[StepResult] = field(default_factory=list)
    ceiling: StepResult | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "machine": self.machine,
            "tool_ceiling": None if self.ceiling is None else self.ceiling.to_dict(),
            "steps": [step.to_dict() for step in self.steps],
        }


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def _number(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "0"


def print_table(report: Report, console: Any = None) -> None:
    """The end-of-run table (rich) and one line on the tool's ceiling."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a pipe or a file: no wrapping at 80 columns
            console = Console(width=200)
        elif console.width < MIN_TABLE_WIDTH:
            console = Console(width=MIN_TABLE_WIDTH)
    target = report.target
    title = f"{target['endpoint']} on {target['model']} at {target['url']}"
    if target.get("protocol") == "v2":
        title = "Open Inference Protocol (v2 REST): " + title
    if target.get("items", 1) > 1:
        title += f" ({target['items']} images per request)"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("step", "req/s", "img/s", "p50", "p90", "p95", "p99", "max"):
        table.add_column(
            column + (" ms" if column.startswith(("p", "max")) else ""), justify="right"
        )
    table.add_column("errors", justify="left")
    table.add_column("batch", justify="right")
    table.add_column("queue ms", justify="right")
    table.add_column("tool cores", justify="right")
    for step in report.steps:
        latency = step.latency_ms
        table.add_row(
            step.label,
            _number(step.requests_per_s),
            _number(step.images_per_s),
            *(_ms(latency.get(key)) for key in ("p50", "p90", "p95", "p99", "max")),
            errors_text(step.errors),
            _number(step.server.mean_batch_size, 1),
            _ms(step.server.mean_queue_wait_ms),
            _number(step.client_cpu_cores, 2),
        )
    console.print(table)
    if report.ceiling is not None:
        console.print(ceiling_text(report.ceiling))
    lagging = [s for s in report.steps if s.dispatch_lag_ms_p99 and s.dispatch_lag_ms_p99 > 5]
    for step in lagging:
        console.print(
            f"[yellow]{step.label}: the tool sent late (p99 {step.dispatch_lag_ms_p99:.1f} ms "
            "behind schedule); the figures include that lag[/yellow]"
        )


def ceiling_text(ceiling: StepResult) -> str:
    return (
        f"tool ceiling: {_number(ceiling.requests_per_s)} req/s against /healthz "
        f"at {int(ceiling.level)} clients, using {ceiling.client_cpu_cores:.2f} cores "
        f"(p50 {_ms(ceiling.latency_ms.get('p50'))} ms)"
    )


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


CSV_FIELDS = (
    "label",
    "mode",
    "level",
    "endpoint",
    "items_per_request",
    "duration_s",
    "requests",
    "successes",
    "requests_per_s",
    "images_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "errors",
    "mean_batch_size",
    "mean_queue_wait_ms",
    "mean_inference_ms",
    "client_cpu_cores",
    "dispatch_lag_ms_p99",
)


def write_csv(report: Report, path: Path) -> None:
    """One row per step (the ceiling first, when measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = ([report.ceiling] if report.ceiling is not None else []) + report.steps
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for step in steps:
            row = step.to_dict()
            latency = row.pop("latency_ms")
            server = row.pop("server")
            row.update({f"{key}_ms": value for key, value in latency.items()})
            row.update(server)
            row["errors"] = ";".join(f"{k}={v}" for k, v in row["errors"].items())
            writer.writerow({key: row.get(key) for key in CSV_FIELDS})


def write_chart(steps: Sequence[StepResult], path: Path, title: str) -> None:
    """Latency percentiles against the throughput reached, one point per step (PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(f"the chart needs matplotlib; {install_hint('loadtest')}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    throughput = [step.images_per_s for step in steps]
    for key, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^-"), ("max", "x:")):
        axes.plot(
            throughput, [step.latency_ms.get(key, math.nan) for step in steps], style, label=key
        )
    for step, x in zip(steps, throughput, strict=True):
        axes.annotate(
            step.label,
            (x, step.latency_ms.get("p99", math.nan)),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, 4),
        )
    axes.set_xlabel("throughput (images/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
