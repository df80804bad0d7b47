"""Percentiles, latency summaries, error accounting, /metrics parsing and arrival schedules."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from service.loadtest.runner import arrival_offsets
from service.loadtest.scrape import parse_model_sums, server_figures
from service.loadtest.stats import Recorder, build_step, latency_summary_ms, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.5) == 100.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_percentile_reports_a_value_that_occurred() -> None:
    values = [1.0, 2.0, 3.0, 10.0]
    assert percentile(values, 50) == 2.0  # no interpolation to 2.5
    assert percentile(values, 75) == 3.0
    assert percentile(values, 76) == 10.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan_and_bad_rank_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_summary_ms([0.003, 0.001, 0.002, 0.004])
    assert summary["p50"] == pytest.approx(2.0)
    assert summary["p99"] == pytest.approx(4.0)
    assert summary["max"] == pytest.approx(4.0)
    assert summary["mean"] == pytest.approx(2.5)
    assert all(math.isnan(v) for v in latency_summary_ms([]).values())


def test_errors_are_counted_by_kind_and_kept_out_of_latency() -> None:
    recorder = Recorder()
    for _ in range(6):
        recorder.ok(0.010, images=4)
    recorder.failed("503")
    recorder.failed("503")
    recorder.failed("ConnectError")
    step = build_step(
        recorder,
        label="c=2",
        mode="closed",
        level=2,
        endpoint="batch",
        items_per_request=4,
        duration_s=2.0,
        client_cpu_s=0.5,
        not_sent=1,
    )
    assert step.requests == 10  # 6 answered, 3 failed, 1 never sent
    assert step.successes == 6
    assert step.errors == {"503": 2, "ConnectError": 1, "not-sent": 1}
    assert step.error_count == 4
    assert step.requests_per_s == pytest.approx(3.0)
    assert step.images_per_s == pytest.approx(12.0)
    assert step.latency_ms["max"] == pytest.approx(10.0)  # failures have no latency
    assert step.client_cpu_cores == pytest.approx(0.25)
    assert step.to_dict()["errors"] == {"503": 2, "ConnectError": 1, "not-sent": 1}


METRICS = """\
# HELP imagegen_batch_size_images Images in one model run.
# TYPE imagegen_batch_size_images histogram
imagegen_batch_size_images_bucket{le="1.0",model="a"} 3.0
imagegen_batch_size_images_count{model="a"} 10.0
imagegen_batch_size_images_sum{model="a"} 80.0
imagegen_batch_size_images_count{model="b"} 5.0
imagegen_batch_size_images_sum{model="b"} 5.0
imagegen_queue_wait_seconds_count{model="a"} 80.0
imagegen_queue_wait_seconds_sum{model="a"} 0.4
imagegen_inference_seconds_count{model="a"} 10.0
imagegen_inference_seconds_sum{model="a"} 0.05
"""


def test_metrics_give_mean_batch_and_queue_wait_over_the_step() -> None:
    before = parse_model_sums(METRICS, "a")
    assert before["imagegen_batch_size_images_sum"] == 80.0
    after_text = (
        METRICS.replace('_count{model="a"} 10.0', '_count{model="a"} 14.0')
        .replace('images_sum{model="a"} 80.0', 'images_sum{model="a"} 144.0')
        .replace('seconds_count{model="a"} 80.0', 'seconds_count{model="a"} 144.0')
        .replace('seconds_sum{model="a"} 0.4', 'seconds_sum{model="a"} 1.04')
    )
    figures = server_figures(before, parse_model_sums(after_text, "a"))
    assert figures.mean_batch_size == pytest.approx(16.0)  # 64 images in 4 runs
    assert figures.mean_queue_wait_ms == pytest.approx(10.0)  # 0.64 s over 64 images
    assert figures.batches == 4
    assert figures.mean_inference_ms is not None


def test_metrics_missing_or_unchanged_give_nothing() -> None:
    snapshot = parse_model_sums(METRICS, "a")
    assert server_figures(None, snapshot).mean_batch_size is None
    assert server_figures(snapshot, snapshot).mean_batch_size is None
    assert parse_model_sums(METRICS, "unknown") == {}


def test_constant_arrivals_are_evenly_spaced() -> None:
    offsets = list(arrival_offsets(100.0, 0.5, "constant", random.Random(0)))
    assert len(offsets) == 50
    assert offsets[:3] == pytest.approx([0.0, 0.01, 0.02])
    assert offsets[-1] == pytest.approx(0.49)


def test_poisson_arrivals_have_the_asked_rate_and_vary() -> None:
    offsets = list(arrival_offsets(1000.0, 10.0, "poisson", random.Random(7)))
    assert len(offsets) == pytest.approx(10_000, rel=0.05)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    mean = sum(gaps) / len(gaps)
    assert mean == pytest.approx(0.001, rel=0.05)
    # Exponential gaps: the standard deviation equals the mean.
    spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert spread == pytest.approx(mean, rel=0.1)
    assert list(arrival_offsets(1000.0, 10.0, "poisson", random.Random(7))) == offsets


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        list(arrival_offsets(0.0, 1.0, "constant", random.Random(0)))
