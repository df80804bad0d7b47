"""Every error of the API: its status, the one JSON shape, and never a 500 for bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.service.conftest import GAN, ClientFactory
from tests.service.helpers import assert_error, hold_model, served, wait_until

GENERATE = f"/v1/models/{GAN}/generate"
BATCH = f"/v1/models/{GAN}/generate/batch"


# -- 400 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b'{"seed": 1,}', b"not json", b"\xff\xfe", b'{"seed": 01}'])
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    for path in (GENERATE, BATCH):
        response = await client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, "malformed_json")


# -- 401 ---------------------------------------------------------------------------------------


@pytest.fixture
async def keyed_client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(api_key="s3cret-key") as client:
        yield client


async def test_missing_or_wrong_api_key_is_401(keyed_client: httpx.AsyncClient) -> None:
    response = await keyed_client.post(GENERATE, json={"seed": 1})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    for header in ("Bearer wrong", "Basic s3cret-key", "s3cret-key", "Bearer s3cret-key-and-more"):
        response = await keyed_client.get("/v1/models", headers={"Authorization": header})
        assert_error(response, 401, "unauthorized")


async def test_right_api_key_is_let_through(keyed_client: httpx.AsyncClient) -> None:
    auth = {"Authorization": "Bearer s3cret-key"}
    assert (await keyed_client.post(GENERATE, json={"seed": 1}, headers=auth)).status_code == 200
    assert (
        await keyed_client.get("/v1/models", headers={"authorization": "bearer s3cret-key"})
    ).status_code == 200


async def test_health_readiness_and_metrics_need_no_key(keyed_client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert (await keyed_client.get(path)).status_code == 200, path
    metrics = (await keyed_client.get("/metrics")).text
    assert 'imagegen_rejections_total{reason="unauthorized"}' not in metrics
    await keyed_client.get("/v1/models")
    metrics = (await keyed_client.get("/metrics")).text
    assert 'imagegen_rejections_total{reason="unauthorized"} 1.0' in metrics


# -- 404, 405 ----------------------------------------------------------------------------------


async def test_unknown_model_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for response in (
        await client.post("/v1/models/nope/generate", json={"seed": 1}),
        await client.post("/v1/models/nope/generate/batch", json={"seeds": [1]}),
        await client.get("/v1/models/nope/images/1.png"),
        await client.get("/v1/models/nope"),
    ):
        detail = assert_error(response, 404, "model_not_found")
        assert "nope" in detail["message"]


async def test_unknown_route_and_wrong_method_use_the_error_shape(
    client: httpx.AsyncClient,
) -> None:
    assert_error(await client.get("/v1/nothing"), 404, "not_found")
    response = await client.get(GENERATE)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


# -- 406 ---------------------------------------------------------------------------------------


async def test_unsupported_accept_is_406(client: httpx.AsyncClient) -> None:
    cases = [
        (GENERATE, "text/html"),
        (GENERATE, "image/gif"),
        (GENERATE, "image/png;q=0, application/json;q=0"),
        (BATCH, "image/gif"),
    ]
    for path, accept in cases:
        response = await client.post(
            path, json={"seeds": [1]} if path == BATCH else {}, headers={"Accept": accept}
        )
        assert_error(response, 406, "not_acceptable")
    response = await client.get(
        f"/v1/models/{GAN}/images/1.png", headers={"Accept": "application/json"}
    )
    assert_error(response, 406, "not_acceptable")


# -- 413 ---------------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_body_bytes=2048) as client:
        big = json.dumps({"latent": [0.5] * 1000}).encode()
        assert_error(await client.post(GENERATE, content=big), 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
            for start in range(0, len(big), 512):
                yield big[start : start + 512]

        assert_error(await client.post(GENERATE, content=chunks()), 413, "payload_too_large")
        assert (await client.post(GENERATE, json={"seed": 1})).status_code == 200


async def test_too_many_items_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_items_per_request=4) as client:
        for body in (
            {"seeds": list(range(5))},
            {"count": 5, "seed": 0},
            {"count": 10**12},
            {"latents": [[0.0] * 16] * 5},
        ):
            detail = assert_error(await client.post(BATCH, json=body), 413, "too_many_items")
            assert "limit is 4" in detail["message"]
        assert (await client.post(BATCH, json={"count": 4})).status_code == 200


# -- 422 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"latent": [1.0, 2.0]}',  # wrong length
        '{"latent": [' + ", ".join(["0.1"] * 15) + ", NaN]}",
        '{"latent": [' + ", ".join(["0.1"] * 15) + ", Infinity]}",
        '{"latent": [' + ", ".join(["0.1"] * 15) + ", -Infinity]}",
        '{"latent": [' + ", ".join(["0.1"] * 15) + ", 1e300]}",
        '{"latent": [' + ", ".join(["0.1"] * 15) + ', "x"]}',
        '{"latent": []}',
        '{"latent": 3}',
        '{"seed": -1}',
        '{"seed": 9223372036854775808}',
        '{"seed": 1e3}',
        '{"seed": 1.5}',
        '{"seed": "7"}',
        '{"seed": true}',
        '{"seed": 1, "latent": [' + ", ".join(["0.1"] * 16) + "]}",
        '{"seed": 1, "truncation": 0}',
        '{"seed": 1, "truncation": 1.5}',
        '{"seed": 1, "truncation": NaN}',
        '{"seed": 1, "scale": 0}',
        '{"seed": 1, "scale": 17}',
        '{"seed": 1, "scale": 2.5}',
        '{"seed": 1, "colour": "red"}',
        "[1, 2]",
        '"seed"',
        "null",
    ],
)
async def test_invalid_generate_values_are_422(client: httpx.AsyncClient, body: str) -> None:
    response = await client.post(
        GENERATE, content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"seeds": []},
        {"seeds": [1], "count": 2},
        {"seeds": [1], "latents": [[0.0] * 16]},
        {"seeds": [1, -2]},
        {"seed": 4},
        {"count": 0},
        {"count": 2, "seed": 2**63 - 1},
        {"latents": [[0.0] * 16, [0.0] * 3]},
        {"seeds": [1], "columns": 0},
        {"seeds": [1], "scale": 99},
    ],
)
async def test_invalid_batch_values_are_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    assert_error(await client.post(BATCH, json=body), 422, "invalid_input")


async def test_wrong_latent_length_names_the_model_dimension(client: httpx.AsyncClient) -> None:
    detail = assert_error(
        await client.post(GENERATE, json={"latent": [0.0] * 3}), 422, "invalid_input"
    )
    assert "latent_dim=16" in detail["message"]
    detail = assert_error(
        await client.post(BATCH, json={"latents": [[0.0] * 16, [0.0] * 3]}), 422, "invalid_input"
    )
    assert "latents[1]" in detail["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/images/abc.png",
        "/images/-1.png",
        "/images/+1.png",
        "/images/9223372036854775808.png",
        "/images/1.png?scale=0",
        "/images/1.png?scale=17",
        "/images/1.png?truncation=0",
        "/images/1.png?truncation=nan",
        "/images/1.png?scale=x",
    ],
)
async def test_invalid_seeded_get_is_422(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(f"/v1/models/{GAN}{path}"), 422, "invalid_input")


async def test_oversized_output_image_is_422(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_client() as client:
        body = {"count": 64, "seed": 0, "scale": 16}
        response = await client.post(BATCH, json=body, headers={"Accept": "image/png"})
        assert response.status_code == 200  # 64 tiles of 128 px fit the pixel limit
        from service import dataplane

        monkeypatch.setattr(dataplane, "MAX_OUTPUT_PIXELS", 1000)
        detail = assert_error(
            await client.post(BATCH, json=body, headers={"Accept": "image/png"}),
            422,
            "invalid_input",
        )
        assert "pixels" in detail["message"]
        # The single-image routes (the fast path) apply the same guard.
        single = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 1, "scale": 16})
        assert "pixels" in assert_error(single, 422, "invalid_input")["message"]


# -- 503, 504 ----------------------------------------------------------------------------------


async def test_full_queue_is_503_with_retry_after(make_client: ClientFactory) -> None:
    async with make_client(max_queue_size=1, max_items_per_request=1, max_batch_size=1) as client:
        model = served(client, GAN)
        with hold_model(model) as held:
            running = asyncio.create_task(client.post(GENERATE, json={"seed": 1}))
            await held.wait_entered()
            queued = asyncio.create_task(client.post(GENERATE, json={"seed": 2}))
            await wait_until(lambda: model.batcher.queued_items == 1)
            response = await client.post(GENERATE, json={"seed": 3})
            assert_error(response, 503, "queue_full")
            assert response.headers["retry-after"] == "1"
            held.release()
            assert (await running).status_code == 200
            assert (await queued).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'imagegen_rejections_total{reason="queue_full"} 1.0' in metrics


async def test_request_whose_deadline_passes_in_the_queue_is_504(
    make_client: ClientFactory,
) -> None:
    async with make_client(request_timeout_ms=100, max_batch_size=1) as client:
        model = served(client, GAN)
        with hold_model(model) as held:
            running = asyncio.create_task(client.post(GENERATE, json={"seed": 1}))
            await held.wait_entered()
            response = await client.post(GENERATE, json={"seed": 2})
            detail = assert_error(response, 504, "deadline_exceeded")
            assert "100 ms" in detail["message"]
            assert model.batcher.queued_items == 0
            held.release()
            await running
        # The service keeps working once the model is free again.
        assert (await client.post(GENERATE, json={"seed": 2})).status_code == 200


async def test_model_failure_is_a_json_500_and_the_service_survives(
    client: httpx.AsyncClient,
) -> None:
    model = served(client, GAN)
    generator = model.loaded.generator
    original = generator.generate

    def explode(latents: object) -> object:
        raise RuntimeError("boom")

    generator.generate = explode  # type: ignore[assignment,method-assign]
    try:
        assert_error(await client.post(GENERATE, json={"seed": 1}), 500, "inference_failed")
    finally:
        generator.generate = original  # type: ignore[method-assign]
    assert (await client.post(GENERATE, json={"seed": 1})).status_code == 200
