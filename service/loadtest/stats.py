"""Figures of one load step: latency percentiles, throughput, errors by kind, client CPU."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50.0, 90.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ascending `sorted_values`: the smallest value with at least
    `pct` percent of the values at or below it (so p100 is the maximum, and every reported
    latency is one that a request really had). NaN when there are no values."""
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    count = len(sorted_values)
    if count == 0:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * count))
    return float(sorted_values[rank - 1])


class Recorder:
    """Outcomes of one step's measured requests, stored as cheaply as the hot loop allows.

    Latencies are kept for successful requests only; failures are counted by kind (an HTTP
    status such as "503", or a client-side error name such as "ConnectError").
    """

    __slots__ = ("errors", "images", "latencies_s", "successes")

    def __init__(self) -> None:
        self.latencies_s: array[float] = array("d")
        self.errors: Counter[str] = Counter()
        self.successes = 0
        self.images = 0

    def ok(self, latency_s: float, images: int) -> None:
        self.latencies_s.append(latency_s)
        self.successes += 1
        self.images += images

    def failed(self, kind: str) -> None:
        self.errors[kind] += 1

    def record(self, outcome: int | str, latency_s: float, images: int) -> None:
        """One answer: an HTTP status (200 is success) or a client-side error name."""
        if outcome == 200:
            self.ok(latency_s, images)
        else:
            self.failed(str(outcome))

    @property
    def requests(self) -> int:
        return self.successes + sum(self.errors.values())


@dataclass
class ServerFigures:
    """What the server's `/metrics` says about one step (None where it does not say)."""

    mean_batch_size: float | None = None
    mean_queue_wait_ms: float | None = None
    mean_inference_ms: float | None = None
    batches: int | None = None


@dataclass
class StepResult:
    """One step of a sweep: a concurrency (closed loop) or an arrival rate (open loop)."""

    label: str
    mode: str  # "closed" or "open"
    level: float  # clients (closed) or requests/s offered (open)
    endpoint: str
    items_per_request: int
    duration_s: float  # the measured window
    requests: int  # measured requests: answered, failed, or never sent
    successes: int
    images: int
    throughput_successes: int  # successful answers that arrived inside the window
    throughput_images: int
    errors: dict[str, int]
    latency_ms: dict[str, float]  # p50, p90, p95, p99, max, mean
    client_cpu_cores: float  # the tool's process CPU time over wall time in the window
    server: ServerFigures = field(default_factory=ServerFigures)
    dispatch_lag_ms_p99: float | None = None  # open loop: how late the tool sent (its limit)
    not_sent: int = 0  # open loop: arrivals dropped at the tool's in-flight cap

    @property
    def requests_per_s(self) -> float:
        return self.throughput_successes / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def images_per_s(self) -> float:
        return self.throughput_images / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "mode": self.mode,
            "level": self.level,
            "endpoint": self.endpoint,
            "items_per_request": self.items_per_request,
            "duration_s": round(self.duration_s, 4),
            "requests": self.requests,
            "successes": self.successes,
            "images": self.images,
            "requests_per_s": _round(self.requests_per_s),
            "images_per_s": _round(self.images_per_s),
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": {key: _round(value) for key, value in self.latency_ms.items()},
            "client_cpu_cores": _round(self.client_cpu_cores),
            "server": {
                "mean_batch_size": _round(self.server.mean_batch_size),
                "mean_queue_wait_ms": _round(self.server.mean_queue_wait_ms),
                "mean_inference_ms": _round(self.server.mean_inference_ms),
                "batches": self.server.batches,
            },
            "dispatch_lag_ms_p99": _round(self.dispatch_lag_ms_p99),
            "not_sent": self.not_sent,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p95/p99, max and mean in milliseconds (NaN when nothing succeeded)."""
    ordered = sorted(latencies_s)
    summary = {f"p{pct:g}": percentile(ordered, pct) * 1000.0 for pct in PERCENTILES}
    summary["max"] = ordered[-1] * 1000.0 if ordered else math.nan
    summary["mean"] = sum(ordered) / len(ordered) * 1000.0 if ordered else math.nan
    return summary


def build_step(
    recorder: Recorder,
    *,
    label: str,
    mode: str,
    level: float,
    endpoint: str,
    items_per_request: int,
    duration_s: float,
    client_cpu_s: float,
    server: ServerFigures | None = None,
    dispatch_lags_s: Sequence[float] | None = None,
    not_sent: int = 0,
    throughput: Recorder | None = None,
) -> StepResult:
    """A step's figures; `throughput` counts answers inside the window when that differs from
    the requests whose latency is reported (open loop), else `recorder` serves for both."""
    throughput = throughput if throughput is not None else recorder
    lag_p99 = None
    if dispatch_lags_s:
        lag_p99 = percentile(sorted(dispatch_lags_s), 99.0) * 1000.0
    errors = dict(recorder.errors)
    if not_sent:
        errors["not-sent"] = not_sent
    return StepResult(
        label=label,
        mode=mode,
        level=level,
        endpoint=endpoint,
        items_per_request=items_per_request,
        duration_s=duration_s,
        requests=recorder.requests + not_sent,
        successes=recorder.successes,
        images=recorder.images,
        throughput_successes=throughput.successes,
        throughput_images=throughput.images,
        errors=errors,
        latency_ms=latency_summary_ms(recorder.latencies_s),
        client_cpu_cores=client_cpu_s / duration_s if duration_s > 0 else math.nan,
        server=server if server is not None else ServerFigures(),
        dispatch_lag_ms_p99=lag_p99,
        not_sent=not_sent,
    )
