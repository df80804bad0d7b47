"""Install hints name the checkout, never a package index's `imagegen` (someone else's)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `pip install imagegen...`, `pip install 'imagegen[x]'`, `uv pip install "imagegen"`.
INDEX_INSTALL = re.compile(r"pip install\b[^\n`]*?['\"]?\bimagegen\b(?!-service)")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "service", "training", "docs", "deploy", "README.md", "Makefile",
         "Dockerfile", "pyproject.toml"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    suffixes = {".py", ".md", ".toml", ".yaml", ".yml", ".conf", ""}
    return [
        ROOT / name
        for name in listed
        if Path(name).suffix in suffixes and "static/vendor" not in name
    ]


def test_the_distribution_has_a_name_of_its_own() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^name = "imagegen-service"$', pyproject, re.MULTILINE)
    # The command keeps its name.
    assert re.search(r'^imagegen = "service.cli:app"$', pyproject, re.MULTILINE)


def test_no_hint_installs_imagegen_from_a_package_index() -> None:
    files = tracked_text_files()
    assert len(files) > 20
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INDEX_INSTALL.search(line)
    ]
    assert offenders == []


def test_the_pattern_catches_what_it_should() -> None:
    for bad in ["pip install 'imagegen[fp16]'", "pip install imagegen", 'pip install "imagegen"']:
        assert INDEX_INSTALL.search(bad), bad
    for good in ["pip install -e '.[fp16]'", "pip install -c requirements.lock ."]:
        assert not INDEX_INSTALL.search(good), good
