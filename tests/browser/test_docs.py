"""Swagger UI (/docs) and ReDoc (/redoc) render every operation with the network cut off.

Every request the browser makes outside the server's origin is aborted and recorded: the pages
must render from the package alone, as they would on a machine without internet access.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.conftest import TIMEOUT_MS, PageLog

pytestmark = [pytest.mark.browser, pytest.mark.server]

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


class Offline:
    """Aborts, and remembers, every request that leaves the server's origin."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.blocked: list[str] = []
        self.served: list[str] = []

    def handle(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/") or url.startswith(("data:", "blob:")):
            self.served.append(url)
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline_page(
    browser: Browser, page_log: PageLog, server_url: str
) -> Iterator[tuple[Page, Offline]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    offline = Offline(server_url)
    context.route("**/*", offline.handle)
    try:
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tab.on("console", page_log.on_console)
        tab.on("pageerror", page_log.on_page_error)
        yield tab, offline
    finally:
        context.close()


def operations(server_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation in the served OpenAPI document."""
    schema = httpx.get(f"{server_url}/openapi.json", timeout=30).json()
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_swagger_ui_renders_every_operation_offline_and_runs_one(
    offline_page: tuple[Page, Offline], page_log: PageLog, server_url: str
) -> None:
    page, offline = offline_page
    expected = operations(server_url)
    assert len(expected) >= 6
    page.goto(server_url + "/docs")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(expected))
    for method, path, _ in expected:
        block = page.locator(f".opblock-{method}").filter(
            has=page.locator(f".opblock-summary-path[data-path='{path}']")
        )
        expect(block).to_have_count(1)
    # "Try it out" on the model list: the page calls the API and shows the answer.
    models = page.locator(".opblock-get").filter(
        has=page.locator(".opblock-summary-path[data-path='/v1/models']")
    )
    models.locator(".opblock-summary").click()
    models.get_by_role("button", name="Try it out").click()
    models.get_by_role("button", name="Execute").click()
    expect(models.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
        "200"
    )
    expect(models.locator(".live-responses-table tbody .microlight").first).to_contain_text(
        '"latent_dim"'
    )
    assert offline.blocked == []
    assert any(
        url.endswith("/static/vendor/swagger-ui/swagger-ui-bundle.js") for url in offline.served
    )
    assert page_log.console_errors == []  # a CSP violation would be one
    assert page_log.page_errors == []


def test_redoc_renders_every_operation_offline(
    offline_page: tuple[Page, Offline], page_log: PageLog, server_url: str
) -> None:
    page, offline = offline_page
    expected = operations(server_url)
    page.goto(server_url + "/redoc")
    sections = page.locator("[data-section-id^='operation/']")
    expect(sections).to_have_count(len(expected))
    for _, path, operation in expected:
        section = page.locator(f"[data-section-id='operation/{operation['operationId']}']")
        expect(section).to_have_count(1)
        expect(section.locator("h2")).to_have_text(operation["summary"])
        expect(section).to_contain_text(path)
    assert offline.blocked == []
    assert any(url.endswith("/static/vendor/redoc/redoc.standalone.js") for url in offline.served)
    assert page_log.console_errors == []
    assert page_log.page_errors == []
