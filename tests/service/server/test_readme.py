"""Every `curl` line of the README runs, as written, against a real server on the shipped models.

Only the address changes (`localhost:8000` -> this server's free port). `curl` is wrapped to add
`--fail` (an HTTP error is a failed command) and to record its exit status.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.server.test_server import free_port, start_server, wait_ready

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
README_ADDRESS = "localhost:8000"
CURL_WRAPPER = """#!/bin/bash
"$REAL_CURL" --fail --show-error "$@"
status=$?
printf '%s\\n' "$status" >> "$CURL_LOG"
exit $status
"""
# `head` closes the pipe after the bytes it shows; curl then exits 23 (write error). With
# --fail an HTTP error would have ended it earlier, as 22, so 23 here means it succeeded.
CURL_CUT_SHORT = 23


def readme_curl_commands(text: str) -> list[str]:
    """The curl commands in the README's bash blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.startswith("curl ")]
    return commands


def output_files(command: str) -> list[str]:
    return re.findall(r"(?:^|\s)-o\s+(\S+)", command)


@pytest.fixture(scope="module")
def shipped_server() -> Iterator[str]:
    port = free_port()
    process = start_server(ROOT / "models", port)
    try:
        wait_ready(process, f"http://127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def test_the_readme_has_the_examples_it_should() -> None:
    commands = readme_curl_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 9, commands
    assert all(README_ADDRESS in command for command in commands)
    assert any("/images/1.png?scale=4" in command for command in commands)


def test_every_readme_curl_line_succeeds(shipped_server: str, tmp_path: Path) -> None:
    real_curl = shutil.which("curl")
    assert real_curl, "curl is missing (the Makefile's SYSTEM_PACKAGES installs it)"
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "curl"
    wrapper.write_text(CURL_WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "curl.log"
    env = os.environ | {
        "PATH": f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}",
        "REAL_CURL": real_curl,
        "CURL_LOG": str(log),
    }
    for command in readme_curl_commands(README.read_text(encoding="utf-8")):
        runnable = command.replace(README_ADDRESS, shipped_server)
        log.write_text("")
        result = subprocess.run(
            ["bash", "-c", runnable],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (command, result.stderr)  # the pipeline's last stage
        statuses = [int(line) for line in log.read_text().split()]
        allowed = {0, CURL_CUT_SHORT} if "| head" in command else {0}
        assert statuses and set(statuses) <= allowed, (command, statuses, result.stderr)
        if "json.tool" in command:
            assert result.stdout.lstrip().startswith("{"), command
        elif not output_files(command):
            assert result.stdout, command
        for name in output_files(command):
            content = (work / name).read_bytes()
            magic = {".png": b"\x89PNG\r\n\x1a\n", ".gif": b"GIF89a"}[Path(name).suffix]
            assert content.startswith(magic), (command, content[:40])
    # "The same image from a cacheable URL": the POST's PNG and the GET's are the same bytes.
    assert (work / "seed1.png").read_bytes() == (work / "seed1-again.png").read_bytes()
