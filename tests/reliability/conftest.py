"""Fixtures of the reliability tier: model folders and real server processes on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import Server, launch
from tests.reliability.models import build_slow_generator, write_model, write_tiny

SLOW = "slow-gan"  # about 1e8 multiply-adds per image: queues form at a few hundred req/s
TINY = "tiny-gan"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.server)  # `-m "not server"` skips this tier too


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A slow model (for queueing) and a tiny fast one (for everything else)."""
    root = tmp_path / "models"
    write_model(root, SLOW, build_slow_generator())
    write_tiny(root, TINY)
    return root


Launcher = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path, models_dir: Path) -> Iterator[Launcher]:
    """`serve(**settings)` starts a ready server (models_dir may be overridden); all are
    stopped at the end of the test."""
    servers: list[Server] = []

    def start(*, wait: bool = True, **settings: object) -> Server:
        directory = Path(str(settings.pop("models_dir", models_dir)))
        server = launch(directory, tmp_path / f"server-{len(servers)}.log", **settings)
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()
