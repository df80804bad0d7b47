"""The real server: `python -m service serve` in a subprocess on a free port, over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import GAN

pytestmark = pytest.mark.server

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(models_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    env["IMAGEGEN_MAX_BATCH_DELAY_MS"] = "2"  # also checks that settings come from the env
    command = [sys.executable, "-m", "service", "serve", "--models-dir", str(models_dir)]
    command += ["--port", str(port), "--grpc-port", "0", "--providers", "cpu"]
    command += ["--log-level", "info"]
    command += extra
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_ready(process: subprocess.Popen[str], base_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited early:\n{process.stdout.read() if process.stdout else ''}"
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.fixture
def server(models_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    port = free_port()
    process = start_server(models_dir, port, "--shutdown-grace-s", "10")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, base_url)
        yield process, base_url, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def test_serves_images_over_http(server: tuple[subprocess.Popen[str], str, int]) -> None:
    _, base_url, _ = server
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        png = http.post(f"/v1/models/{GAN}/generate", json={"seed": 1})
        assert png.status_code == 200
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        cached = http.get(f"/v1/models/{GAN}/images/1.png")
        assert cached.content == png.content
        assert (
            http.get(
                f"/v1/models/{GAN}/images/1.png", headers={"If-None-Match": cached.headers["etag"]}
            ).status_code
            == 304
        )
        batch = http.post(f"/v1/models/{GAN}/generate/batch", json={"count": 3, "seed": 0})
        assert [image["seed"] for image in batch.json()["images"]] == [0, 1, 2]
        error = http.post(f"/v1/models/{GAN}/generate", content=b"{oops")
        assert error.status_code == 400
        assert error.json()["error"]["type"] == "malformed_json"
        models = http.get("/v1/models").json()["models"]
        assert models[0]["providers"] == ["CPUExecutionProvider"]
        assert "imagegen_images_generated_total" in http.get("/metrics").text


def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    server: tuple[subprocess.Popen[str], str, int],
) -> None:
    process, _, port = server
    body = json.dumps({"seed": 3}).encode()
    head = (
        f"POST /v1/models/{GAN}/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body[:5])  # the request is in flight, its body half sent
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        # The server stops accepting new connections ...
        deadline = time.monotonic() + 10
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                refused = True
        assert refused, "server kept accepting connections after SIGTERM"
        # ... but still answers the request it had started.
        sock.sendall(body[5:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b"content-type: image/png" in response.lower()
    assert process.wait(timeout=30) == 0
    output = process.stdout.read() if process.stdout else ""
    assert "draining" in output


def test_invalid_model_stops_start_up_naming_the_file(models_dir: Path) -> None:
    card_path = models_dir / GAN / "model.json"
    card = json.loads(card_path.read_text())
    card["latent_dim"] = 5
    card_path.write_text(json.dumps(card))
    process = start_server(models_dir, free_port())
    try:
        output, _ = process.communicate(timeout=START_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    # An operator's error: status 2 and the reason once, without a traceback.
    assert process.returncode == 2
    assert f"{GAN}/model.onnx" in output
    assert output.count("card needs float32 [?, 5]") <= 2  # the model's line, then the reason
    assert "refusing to start" in output and "Traceback" not in output


def test_invalid_model_can_be_skipped(models_dir: Path) -> None:
    (models_dir / GAN / "model.onnx").write_bytes(b"corrupt")
    port = free_port()
    process = start_server(models_dir, port, "--skip-invalid-models")
    try:
        wait_ready(process, f"http://127.0.0.1:{port}")
        names = [
            m["name"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["models"]
        ]
        assert names == ["tiny-vae"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def test_bad_setting_exits_2_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid setting max_batch_size" in result.stderr
