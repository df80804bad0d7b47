"""What the browser tests and the screenshot script share: a real server, Debian's Chromium."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Playwright

START_TIMEOUT_S = 120.0  # loading and warming up on a busy 2-core machine
STOP_TIMEOUT_S = 30.0
# Debian's chromium package (the Makefile's SYSTEM_PACKAGES); Playwright never downloads one.
CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def launch_chromium(playwright: Playwright) -> Browser:
    if not CHROMIUM_PATH.exists():
        raise RuntimeError(f"{CHROMIUM_PATH} is missing: `make system-deps` installs chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready in {START_TIMEOUT_S:g} s:\n{log_path.read_text()}")


@contextmanager
def running_server(models_dir: Path, api_key: str | None = None) -> Iterator[str]:
    """Serve `models_dir` on CPU at a free port; yields the base URL, stops with SIGTERM.

    The log goes to a file, not a pipe nobody reads (a full pipe would stall the server).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    if api_key is not None:
        env["IMAGEGEN_API_KEY"] = api_key  # the environment, not argv: argv is visible
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service", "serve", "--models-dir", str(models_dir)]
    command += ["--port", str(port), "--grpc-port", "0", "--providers", "cpu"]
    command += ["--max-batch-delay-ms", "2"]
    command += ["--log-level", "warning", "--shutdown-grace-s", "5"]
    with tempfile.TemporaryDirectory(prefix="imagegen-server-") as log_dir:
        log_path = Path(log_dir) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, base_url, log_path)
            yield base_url
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=STOP_TIMEOUT_S)
