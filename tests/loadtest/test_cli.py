"""`imagegen loadtest` end to end: the table and files it writes, and clear bad-target errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.loadtest.conftest import MODEL, FakeServer, free_port

QUICK = ["--duration", "0.5", "--warmup", "0.1", "--no-progress"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["loadtest", *args])
    return result.exit_code, result.stdout, result.stderr


def test_sweep_prints_a_table_and_writes_json_csv_and_chart(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    out_json, out_csv, chart = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    code, stdout, stderr = invoke(
        "--url", fake_server.url, "--model", MODEL, "--concurrency", "1,4", *QUICK,
        "--json", str(out_json), "--csv", str(out_csv), "--chart", str(chart),
    )  # fmt: skip
    assert code == 0, stderr
    assert "c=1" in stdout and "c=4" in stdout and "p99 ms" in stdout
    assert "tool ceiling:" in stdout and "cores" in stdout
    report = json.loads(out_json.read_text())
    assert [step["label"] for step in report["steps"]] == ["c=1", "c=4"]
    assert report["tool_ceiling"]["endpoint"] == "healthz"
    assert report["machine"]["cores"] >= 1
    assert report["target"]["client"] == "lean"
    for step in report["steps"]:
        assert step["successes"] > 0 and step["errors"] == {}
        assert step["server"]["mean_batch_size"] == 2.0
        assert set(step["latency_ms"]) == {"p50", "p90", "p95", "p99", "max", "mean"}
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["label"] for row in rows] == ["ceiling /healthz c=4", "c=1", "c=4"]
    assert float(rows[1]["p99_ms"]) >= float(rows[1]["p50_ms"])
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_open_loop_batch_endpoint_with_api_key(fake_server: FakeServer, tmp_path: Path) -> None:
    fake_server.state.behaviour.api_key = "s3cret"
    out = tmp_path / "open.json"
    code, _stdout, stderr = invoke(
        "--url", fake_server.url, "--model", MODEL, "--endpoint", "batch", "--items", "8",
        "--rate", "50", "--arrivals", "poisson", "--seed", "3", "--api-key", "s3cret",
        "--no-ceiling", *QUICK, "--json", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    (step,) = json.loads(out.read_text())["steps"]
    assert step["mode"] == "open" and step["level"] == 50.0
    assert step["items_per_request"] == 8
    assert step["errors"] == {}
    assert step["dispatch_lag_ms_p99"] is not None


def _one_line_error(code: int, stdout: str, stderr: str) -> str:
    assert code == 1
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_refused_connection_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(*invoke("--url", url, *QUICK))
    assert (
        line == f"loadtest: cannot connect to {url}: connection refused (is the service running?)"
    )


def test_unknown_model_is_one_clear_line(fake_server: FakeServer) -> None:
    line = _one_line_error(*invoke("--url", fake_server.url, "--model", "nope", *QUICK))
    assert line.startswith("loadtest: 404 from ")
    assert "no model named 'nope'" in line


@pytest.mark.parametrize(("key", "hint"), [(None, "pass --api-key"), ("wrong", "check --api-key")])
def test_missing_or_wrong_key_is_one_clear_line(
    fake_server: FakeServer, key: str | None, hint: str
) -> None:
    fake_server.state.behaviour.api_key = "right"
    args = ["--url", fake_server.url, "--model", MODEL, *QUICK]
    if key:
        args += ["--api-key", key]
    line = _one_line_error(*invoke(*args))
    assert line.startswith("loadtest: 401 from ") and line.endswith(f"({hint})")


def test_bad_options_are_usage_errors() -> None:
    code, _, stderr = invoke("--concurrency", "1,x")
    assert code == 2 and "comma-separated" in stderr
    code, _, stderr = invoke("--concurrency", "4", "--rate", "10")
    assert code == 2
    code, _, stderr = invoke("--endpoint", "nope")
    assert code == 2


def test_a_bad_target_exits_non_zero_as_a_command(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "service", "loadtest", "--url", url, *QUICK],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"loadtest: cannot connect to {url}: connection refused (is the service running?)"
    )


def test_serving_does_not_load_the_load_test_machinery() -> None:
    code = (
        "import sys\n"
        "import service.cli\n"
        "heavy = ['matplotlib', 'service.loadtest.engine', 'service.loadtest.report', "
        "'service.loadtest.runner']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
