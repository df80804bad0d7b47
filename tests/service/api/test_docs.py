"""The API docs pages: Swagger UI and ReDoc from files in the package, nothing from a CDN."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

import httpx
import pytest

from service.api.routes.docs import REDOC_PATH, SWAGGER_UI_PATH

VENDOR = resources.files("service") / "static" / "vendor"


@pytest.mark.parametrize("path", [SWAGGER_UI_PATH, REDOC_PATH])
async def test_docs_pages_load_only_files_of_this_origin(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert re.search(r"https?://|//cdn", page) is None
    references = re.findall(r'(?:src|href|spec-url)="([^"#]+)"', page)
    assert len(references) >= 2, page
    for reference in references:
        assert reference.startswith("/"), reference
        assert (await client.get(reference)).status_code == 200, reference
    assert "'/openapi.json'" in page or 'spec-url="/openapi.json"' in page


@pytest.mark.parametrize("path", [SWAGGER_UI_PATH, REDOC_PATH])
async def test_the_policy_allows_exactly_the_inline_scripts_of_the_page(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    script_src = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in inline
    }
    assert set(re.findall(r"'sha256-[^']+'", script_src)) == hashes
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src


def test_the_vendored_assets_ship_with_their_licences() -> None:
    for folder, files in {
        "swagger-ui": ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"],
        "redoc": ["redoc.standalone.js", "LICENSE"],
    }.items():
        for name in files:
            assert (VENDOR / folder / name).is_file(), f"{folder}/{name}"
    redoc = (VENDOR / "redoc" / "redoc.standalone.js").read_text(encoding="utf-8")
    assert "cdn.redoc.ly" not in redoc  # `make docs-assets` replaces its remote logo


async def test_fastapis_cdn_pages_are_not_registered(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    docs_routes = [
        route for route in app.routes if getattr(route, "path", "") in (SWAGGER_UI_PATH, REDOC_PATH)
    ]
    assert len(docs_routes) == 2
    assert all(route.endpoint.__module__ == "service.api.routes.docs" for route in docs_routes)
