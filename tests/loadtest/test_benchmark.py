"""`python -m benchmarks.run --short` end to end: real servers, real loads, the docs section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from service.runtime.card import CARD_FILENAME, ONNX_FILENAME
from tests.service.conftest import build_generator, card_for

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny-gan"


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / MODEL
    folder.mkdir(parents=True)
    graph = build_generator(latent_dim=16, height=8, width=8, channels=1, conv=True)
    onnx.save(graph, str(folder / ONNX_FILENAME))
    card = card_for(MODEL, graph, folder / ONNX_FILENAME)
    (folder / CARD_FILENAME).write_text(json.dumps(card), encoding="utf-8")
    return folder.parent


def test_short_benchmark_runs_end_to_end(models_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    kept = "# Benchmarks\n\n<!-- startup:begin -->\nstart-up figures\n<!-- startup:end -->\n"
    docs.write_text(kept, encoding="utf-8")
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "benchmarks.run", "--short", "--models-dir", str(models_dir),
        "--model", MODEL, "--docs", str(docs), "--json", str(out),
        "--server-arg=--max-queue-size=1024",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the limit: raw onnxruntime" in done.stdout
    assert "targets" in done.stdout

    result = json.loads(out.read_text())
    raw = {(r["batch"], r["png"], r["label"]) for r in result["raw"]}
    for batch in (1, 8, 64):
        assert (batch, True, "service session options") in raw
        assert (batch, False, "service session options") in raw
    assert (64, True, "onnxruntime defaults") in raw
    steps = [
        (run["system"], run["load"]["endpoint"], run["load"]["clients"], step["items_per_request"])
        for run in result["service"]
        for step in run["report"]["steps"]
    ]
    assert steps == [
        ("imagegen, batching on", "single", 1, 1),
        ("imagegen, batching on", "single", 32, 1),
        ("imagegen, batching on", "batch", 4, 64),
        ("imagegen, batching off", "single", 1, 1),
        ("imagegen, batching off", "single", 32, 1),
        ("imagegen, 2 workers", "single", 1, 1),
        ("imagegen, 2 workers", "single", 32, 1),
        ("naive FastAPI", "single", 1, 1),
        ("naive FastAPI", "single", 32, 1),
        ("LitServe", "single", 1, 1),
        ("LitServe", "single", 32, 1),
    ]
    for run in result["service"]:
        (step,) = run["report"]["steps"]
        assert step["successes"] > 0 and step["errors"] == {}, step
        assert run["command"].startswith("imagegen loadtest --url http://127.0.0.1:")
        assert run["report"]["tool_ceiling"] is None  # measured in a run of its own
        if run["system"].startswith("imagegen"):
            assert step["server"]["mean_batch_size"] is not None
            assert run["server_cores"] >= run["server_event_loop_cores"] > 0
            assert run["event_loop_us_per_request"] > 0
        else:  # the peers have no /metrics
            assert step["server"]["mean_batch_size"] is None
    loop = {run["system"]: run["event_loop_us_per_request"] for run in result["service"]}
    assert loop["LitServe"] is None and loop["naive FastAPI"] > 0
    off = [run for run in result["service"] if run["system"] == "imagegen, batching off"]
    assert all(run["report"]["steps"][0]["server"]["mean_batch_size"] == 1.0 for run in off)
    assert result["tool_ceiling"]["level"] == 32 and result["tool_ceiling"]["requests_per_s"] > 0
    assert len(result["checks"]) == 6
    commands = result["server_commands"]
    assert "--max-batch-size 1" in commands["imagegen, batching off"]
    assert "--workers 2" in commands["imagegen, 2 workers"]
    assert "benchmarks.peers.naive" in commands["naive FastAPI"]
    assert "benchmarks.peers.litserve_peer" in commands["LitServe"]
    services = [c for name, c in commands.items() if name.startswith("imagegen")]
    assert all("--max-queue-size=1024" in c for c in services)

    text = docs.read_text()
    assert text.startswith(kept.rstrip())  # the other section survives
    assert "<!-- throughput:begin -->" in text and "<!-- throughput:end -->" in text
    assert "cores" in text and "imagegen serve --models-dir" in text
    assert (
        f"python -m benchmarks.run --models-dir {models_dir} --model {MODEL} "
        "--server-arg=--max-queue-size=1024 --short"
    ) in text
    # A second run replaces its own section instead of adding one.
    section = text[text.index("<!-- throughput:begin -->") :]
    docs.write_text(kept + "\n" + section + "\ntail kept\n", encoding="utf-8")
    from benchmarks.run import write_section

    write_section(docs, "new figures")
    again = docs.read_text()
    assert again.count("<!-- throughput:begin -->") == 1
    assert "new figures" in again and "tail kept" in again and "start-up figures" in again


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--short", "--models-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("benchmark: no model 'fashion-gan' in ")
