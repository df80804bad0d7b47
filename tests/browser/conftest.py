"""Browser fixtures: tiny real models, a real server process, Debian's Chromium via Playwright."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

from service.runtime.card import CARD_FILENAME, ONNX_FILENAME
from tests.browser.harness import launch_chromium, running_server
from tests.service.conftest import GAN, VAE, build_generator, card_for

TIMEOUT_MS = 30_000  # generous: a busy 2-core machine

expect.set_options(timeout=TIMEOUT_MS)


def write_model(models_dir: Path, name: str, **graph_options: object) -> Path:
    folder = models_dir / name
    folder.mkdir(parents=True)
    model = build_generator(**graph_options)  # type: ignore[arg-type]
    onnx.save(model, str(folder / ONNX_FILENAME))
    card = card_for(name, model, folder / ONNX_FILENAME)
    (folder / CARD_FILENAME).write_text(json.dumps(card), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same two tiny models as the service tests: RGB 8x8 GAN, grayscale 6x6 VAE."""
    root = tmp_path_factory.mktemp("browser") / "models"
    write_model(root, GAN, latent_dim=16, height=8, width=8, channels=3, conv=True)
    write_model(root, VAE, latent_dim=4, height=6, width=6, channels=1, activation="Sigmoid")
    return root


@pytest.fixture(scope="module")
def server_url(models_dir: Path) -> Iterator[str]:
    with running_server(models_dir) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageLog:
    """What the page reported: console errors and uncaught exceptions."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location})")

    def on_page_error(self, error: Error) -> None:
        self.page_errors.append(str(error))


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser: Browser, page_log: PageLog) -> Iterator[Page]:
    """A fresh context (no storage) per test, with the console watched."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tab.on("console", page_log.on_console)
        tab.on("pageerror", page_log.on_page_error)
        yield tab
    finally:
        context.close()
