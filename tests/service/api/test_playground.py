"""The playground's files: served from the package at `/` and `/static/`, open without the key."""

from __future__ import annotations

import re

import httpx

from tests.service.conftest import ClientFactory
from tests.service.helpers import assert_error


async def test_page_is_served_at_the_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "<title>imagegen playground</title>" in response.text
    assert 'href="/docs"' in response.text


async def test_page_loads_only_its_own_files(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    references = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert references, "the page references its scripts and styles"
    for reference in references:
        assert reference.startswith("/") or reference.startswith("data:"), reference
    for asset, media_type in [("/static/app.js", "javascript"), ("/static/style.css", "css")]:
        response = await client.get(asset)
        assert response.status_code == 200
        assert media_type in response.headers["content-type"]
    for asset in ("/", "/static/app.js", "/static/style.css"):
        assert re.search(r"https?://|//cdn", (await client.get(asset)).text) is None, asset


async def test_missing_static_file_is_a_json_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/static/nope.js"), 404, "not_found")


async def test_page_needs_no_key_but_the_api_does(make_client: ClientFactory) -> None:
    async with make_client(api_key="s3cret") as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/static/app.js")).status_code == 200
        assert_error(await client.get("/v1/models"), 401, "unauthorized")
        assert_error(await client.get("/v1/models/x/latents/1"), 401, "unauthorized")
        assert_error(await client.get("/staticky"), 401, "unauthorized")  # prefix is /static/
        headers = {"Authorization": "Bearer s3cret"}
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
