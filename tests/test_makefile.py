"""The Makefile's install steps run pip only when pyproject.toml or the lock file changed.

`make -n` (print, do not run) on a copy of the Makefile, pyproject.toml and lock, with a venv
made of empty files: no network, no pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def planned(workdir: Path, target: str) -> list[str]:
    """The commands `make <target>` would run."""
    # Not the calling make's flags: under `make test` they would add "Entering/Leaving directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "SUDO=false"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [line for line in commands if "pip install" in line]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    return tmp_path


def age(path: Path, seconds_ago: float) -> None:
    stamp = path.stat().st_mtime if path.exists() else 2e9
    os.utime(path, (stamp - seconds_ago, stamp - seconds_ago))


def test_serve_installs_once_then_only_when_the_dependencies_change(checkout: Path) -> None:
    first = planned(checkout, "serve")
    assert len(pip_installs(first)) == 1  # a fresh venv: install ...
    assert first[-1].endswith("imagegen serve")
    stamp = checkout / ".venv" / ".installed-serve"
    stamp.touch()  # ... as the recipe's `touch` would
    for name in ("pyproject.toml", "requirements.lock"):
        age(checkout / name, 60)
    second = planned(checkout, "serve")
    assert pip_installs(second) == []  # the second time: straight to serving, offline
    assert second == [".venv/bin/imagegen serve"]
    age(stamp, 30)  # older than what is touched next (file times can be a few ms coarse)
    for changed in ("pyproject.toml", "requirements.lock"):
        (checkout / changed).touch()
        assert len(pip_installs(planned(checkout, "serve"))) == 1, changed
        age(checkout / changed, 60)
    assert pip_installs(planned(checkout, "serve")) == []


def test_the_full_install_also_counts_as_the_serving_install(checkout: Path) -> None:
    dev = planned(checkout, "install-dev")
    (line,) = pip_installs(dev)
    assert "'.[train,dev,loadtest]'" in line
    assert any(".installed-serve" in command for command in dev if command.startswith("touch"))
