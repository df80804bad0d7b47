"""A real server's log never shows the API key, however a client spells it in the URL."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest

from tests.service.conftest import GAN
from tests.service.server.test_server import START_TIMEOUT_S, free_port, wait_ready

pytestmark = pytest.mark.server

KEY = "Zm9v+YmFy/YmF6=="  # base64-like: `+`, `/` and `=` all change when URL-encoded


def _spellings(key: str) -> list[str]:
    encoded = quote(key, safe="")
    return [
        key,
        encoded,  # %2B%2F%3D
        re.sub(r"%[0-9A-F]{2}", lambda match: match.group().lower(), encoded),  # %2b%2f%3d
        encoded.replace("%2F", "%2f"),  # mixed case
        quote_plus(key),
        "".join(f"%{byte:02x}" for byte in key.encode()),  # every byte, lower-case hex
        "".join(quote(c, safe="") if i % 2 else c for i, c in enumerate(key)),  # partially
        quote(encoded, safe=""),  # twice
    ]


def test_the_key_in_any_url_encoding_never_reaches_the_log(models_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGEN_")}
    env["IMAGEGEN_API_KEY"] = KEY
    command = [sys.executable, "-m", "service", "serve", "--models-dir", str(models_dir)]
    command += ["--port", str(port), "--grpc-port", "0", "--providers", "cpu"]
    command += ["--log-level", "info"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sent = 0
    try:
        wait_ready(process, f"http://127.0.0.1:{port}")
        for written in _spellings(KEY):
            # http.client sends the target exactly as given (httpx would normalise it).
            for target in [
                f"/v1/models?api_key={written}",
                f"/v1/models/{GAN}/images/1.png?key={written}&scale=2",
                f"/v1/models/{written}",
                f"/{written}",
            ]:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", target)
                status = connection.getresponse().status
                connection.close()
                assert status in (401, 404), (target, status)
                sent += 1
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=START_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    access_lines = [line for line in output.splitlines() if '" 40' in line]
    assert len(access_lines) == sent, output  # the access log saw every request ...
    for text in (output, unquote(output), unquote_plus(output), unquote(unquote(output))):
        assert KEY not in text  # ... and no reading of it shows the key
    assert output.count("[redacted]") == sent  # one per request: where the key was
