"""`imagegen loadtest --protocol v2` against a real server: the Open Inference Protocol's REST
infer and the v1 routes, loaded on the same model, both answered without errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.loadtest.target import RequestFactory, Target
from tests.reliability.harness import Server, launch
from tests.reliability.models import write_tiny

pytestmark = pytest.mark.server

MODEL = "tiny-gan"
QUICK = ["--duration", "1.5", "--warmup", "0.3", "--no-progress", "--concurrency", "2"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("loadtest-v2")
    write_tiny(root / "models", MODEL)
    started = launch(root / "models", root / "server.log", log_level="warning")
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


def test_v2_requests_are_infer_calls_with_fresh_seeds() -> None:
    factory = RequestFactory(
        Target("http://127.0.0.1:9", MODEL, "batch", items=3, protocol="v2"), first_seed=10
    )
    method, url, body = factory.next()
    assert (method, url) == ("POST", f"http://127.0.0.1:9/v2/models/{MODEL}/infer")
    assert body is not None
    request = json.loads(body)
    assert request["inputs"] == [
        {"name": "seed", "datatype": "INT64", "shape": [3], "data": [10, 11, 12]}
    ]
    assert request["outputs"] == [{"name": "png", "parameters": {"binary_data": True}}]
    payload = factory.next_payload()
    assert payload.startswith(f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\n".encode())
    assert b'"data":[13,14,15]' in payload
    with pytest.raises(ValueError, match="no GET image route"):
        Target("http://127.0.0.1:9", MODEL, "get", protocol="v2")


@pytest.mark.parametrize("endpoint", ["single", "batch"])
def test_v1_and_v2_load_the_same_model_without_errors(
    server: Server, tmp_path: Path, endpoint: str
) -> None:
    reports = {}
    for protocol in ("v1", "v2"):
        out = tmp_path / f"{protocol}.json"
        result = CliRunner().invoke(
            app,
            ["loadtest", "--url", server.base_url, "--model", MODEL, "--endpoint", endpoint,
             "--items", "4", "--protocol", protocol, "--json", str(out), *QUICK],
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        if protocol == "v2":
            assert "Open Inference Protocol (v2 REST)" in result.stdout
        reports[protocol] = json.loads(out.read_text())
    for protocol, report in reports.items():
        assert report["target"]["protocol"] == protocol
        (step,) = report["steps"]
        summary = (protocol, step["requests"], step["successes"], step["errors"])
        assert step["successes"] > 0 and step["errors"] == {}, summary
    samples = server.metrics()
    v2_answers = sum(
        value
        for key, value in samples.items()
        if key.startswith("imagegen_protocol_requests_total") and 'protocol="v2"' in key
    )
    assert v2_answers >= reports["v2"]["steps"][0]["successes"]


def test_bad_protocol_options_are_usage_errors() -> None:
    result = CliRunner().invoke(app, ["loadtest", "--protocol", "v3"])
    assert result.exit_code == 2 and "v1" in result.stderr
    result = CliRunner().invoke(app, ["loadtest", "--protocol", "v2", "--endpoint", "get"])
    assert result.exit_code == 2 and "single or batch" in result.stderr
