"""Whether and where gRPC is served: 0 is off; without grpcio, the default port quietly turns
gRPC off while an explicit one stops start-up with the install command; a taken gRPC port is
refused before any model loads."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

import service.cli as cli
import service.v2 as v2
from service.settings import Settings
from tests.service.test_cli import free_port, invoke


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Settings that reached run_server (which then returns 0 instead of loading models)."""
    seen: list[Settings] = []
    monkeypatch.setattr(cli, "run_server", lambda settings: seen.append(settings) or 0)
    return seen


def test_the_port_to_serve(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("IMAGEGEN_GRPC_PORT", raising=False)
    assert v2.grpc_port_to_serve(Settings(grpc_port=0)) is None
    assert v2.grpc_port_to_serve(Settings()) == 8001  # grpcio is installed here
    monkeypatch.setattr(v2, "grpc_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger="service.v2"):
        assert v2.grpc_port_to_serve(Settings()) is None
    assert "pip install 'imagegen-service[grpc]'" in caplog.text
    with pytest.raises(v2.GrpcUnavailable, match=r"imagegen-service\[grpc\]"):
        v2.grpc_port_to_serve(Settings(grpc_port=9001))
    monkeypatch.setenv("IMAGEGEN_GRPC_PORT", "8001")  # explicit, even at the default value
    with pytest.raises(v2.GrpcUnavailable):
        v2.grpc_port_to_serve(Settings())


def test_an_explicit_port_without_grpcio_is_one_clear_line(
    models_dir: Path,
    captured: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(v2, "grpc_installed", lambda: False)
    code, _, stderr = invoke(
        "serve", "--models-dir", str(models_dir), "--port", str(free_port()), "--grpc-port", "9001"
    )
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert "grpcio is not installed" in line and "--grpc-port or IMAGEGEN_GRPC_PORT" in line
    assert not captured


def test_a_taken_grpc_port_is_refused_before_any_model_loads(
    models_dir: Path,
    captured: list[Settings],
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, _, stderr = invoke(
            "serve", "--models-dir", str(models_dir), "--port", str(free_port()),
            "--grpc-port", str(port),
        )  # fmt: skip
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert f"cannot listen gRPC on 127.0.0.1:{port}" in line
    assert "--grpc-port or IMAGEGEN_GRPC_PORT" in line
    assert not captured
