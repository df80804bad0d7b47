"""The hot routes' fast path: the same contract as the FastAPI routes it stands in for, plus
HEAD, private caching with a key, combined If-None-Match lines and bounded metric labels."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from service.api.fast import GENERATE_ROUTE, IMAGE_ROUTE
from tests.service.conftest import GAN, ClientFactory

IMAGE = f"/v1/models/{GAN}/images/7.png"
GENERATE = f"/v1/models/{GAN}/generate"


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_openapi_still_documents_the_hot_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "post" in paths[GENERATE_ROUTE]
    assert "requestBody" in paths[GENERATE_ROUTE]["post"]
    image = paths[IMAGE_ROUTE]["get"]
    assert {p["name"] for p in image["parameters"]} >= {"model", "seed", "truncation", "scale"}
    assert {"200", "304", "404", "422"} <= set(image["responses"])


async def test_fastapi_route_objects_are_served_by_the_fast_path(
    client: httpx.AsyncClient,
) -> None:
    """Reached through FastAPI's own router, the declared routes answer exactly alike."""
    app = client.app  # type: ignore[attr-defined]
    app.fast_path, fast_path = None, app.fast_path  # force FastAPI's middleware and routing
    try:
        routed = await client.post(GENERATE, json={"seed": 3})
        routed_image = await client.get(IMAGE)
    finally:
        app.fast_path = fast_path
    direct = await client.post(GENERATE, json={"seed": 3})
    assert routed.status_code == direct.status_code == 200
    assert routed.content == direct.content
    assert routed_image.content == (await client.get(IMAGE)).content


async def test_head_answers_the_get_headers_without_a_body(client: httpx.AsyncClient) -> None:
    get = await client.get(IMAGE)
    head = await client.head(IMAGE)
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "cache-control", "content-type", "content-length", "x-seed"):
        assert head.headers[name] == get.headers[name]
    # FastAPI routes answer HEAD too (RFC 9110: wherever GET is).
    for path in ("/healthz", "/readyz", f"/v1/models/{GAN}", "/metrics"):
        head = await client.head(path)
        assert head.status_code == 200 and head.content == b"", path


async def test_repeated_if_none_match_lines_are_one_list(client: httpx.AsyncClient) -> None:
    etag = (await client.get(IMAGE)).headers["etag"]
    headers = httpx.Headers([("if-none-match", '"other"'), ("if-none-match", etag)])
    response = await client.get(IMAGE, headers=headers)
    assert response.status_code == 304 and response.content == b""
    assert response.headers["etag"] == etag


async def test_public_cache_without_a_key_private_with_one(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await client.get(IMAGE)
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert "vary" not in response.headers
    async with make_client(api_key="s3cret") as client:
        response = await client.get(IMAGE, headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("private")
        assert response.headers["vary"] == "Authorization"
        unauthorized = await client.get(IMAGE)
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        assert unauthorized.json()["error"]["type"] == "unauthorized"


async def test_metrics_count_hot_routes_and_fold_unknown_methods(
    client: httpx.AsyncClient,
) -> None:
    for seed in range(3):
        assert (await client.post(GENERATE, json={"seed": seed})).status_code == 200
    assert (await client.post(GENERATE, json={"seed": -1})).status_code == 422
    for method in ("FROB", "BREW", "PROPFIND"):
        await client.request(method, "/healthz")
    text = (await client.get("/metrics")).text
    requests = "imagegen_http_requests_total"
    assert metric_value(text, requests, route=GENERATE_ROUTE, status="200") == 3
    assert metric_value(text, requests, route=GENERATE_ROUTE, status="422") == 1
    assert metric_value(text, "imagegen_rejections_total", reason="invalid_input") >= 1
    assert metric_value(text, requests, method="other") == 3
    assert "FROB" not in text and "PROPFIND" not in text


async def test_bad_query_and_seed_are_422_with_the_parameter_named(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(IMAGE + "?scale=17")
    assert response.status_code == 422
    assert "query.scale" in response.json()["error"]["message"]
    response = await client.get(f"/v1/models/{GAN}/images/abc.png")
    assert response.status_code == 422
    assert "seed must be an integer" in response.json()["error"]["message"]


async def test_unexpected_error_is_a_json_500_and_logged(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = client.app  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.dataplane.models[GAN], "check_output_size", broken)
    with caplog.at_level(logging.ERROR):
        response = await client.post(GENERATE, json={"seed": 1})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"type": "internal_error", "message": "internal server error"}
    }
    assert "unexpected error on POST" in caplog.text
    monkeypatch.undo()
    assert (await client.post(GENERATE, json={"seed": 1})).status_code == 200


async def test_concurrent_requests_share_batches(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post(GENERATE, json={"seed": seed}) for seed in range(24))
    )
    assert all(response.status_code == 200 for response in responses)
    text = (await client.get("/metrics")).text
    batches = metric_value(text, "imagegen_batch_size_images_count", model=GAN)
    assert 1 <= batches < 24


async def test_a_failed_batch_scheduler_is_a_500_then_not_ready_then_restarted(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client() as client:
        app = client.app  # type: ignore[attr-defined]
        batcher = app.state.dataplane.models[GAN].batcher
        batcher.restart_delay_s = 0.3

        def broken_take(limit: int) -> list[object]:
            raise RuntimeError("scheduler bug")

        monkeypatch.setattr(batcher, "_take", broken_take)
        response = await asyncio.wait_for(client.post(GENERATE, json={"seed": 1}), 5)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "batcher_failed" and "restarting" in error["message"]
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and GAN in ready.json()["error"]["message"]
        retry = await client.post(GENERATE, json={"seed": 1})
        assert retry.status_code == 503 and "retry-after" in retry.headers
        monkeypatch.undo()
        for _ in range(100):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.02)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post(GENERATE, json={"seed": 1})).status_code == 200
