"""POST interpolate (strip PNG, looping GIF, JSON frames) and GET latents/{seed}."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.imaging import GRID_PADDING_PX
from service.interpolation import interpolate
from service.runtime.card import latent_for_seed
from tests.service.conftest import GAN, VAE, ClientFactory
from tests.service.helpers import assert_error, decode_png, hold_model, served, wait_until

INTERPOLATE = f"/v1/models/{GAN}/interpolate"
GIF = {"Accept": "image/gif"}
JSON = {"Accept": "application/json"}
SIDE = 8  # tiny-gan: 8x8 RGB, latent 16


def seeds(start: int, end: int, **options: Any) -> dict[str, Any]:
    return {"start": {"seed": start}, "end": {"seed": end}, **options}


async def generate(client: httpx.AsyncClient, model: str = GAN, **body: Any) -> bytes:
    response = await client.post(f"/v1/models/{model}/generate", json=body)
    assert response.status_code == 200, response.text
    return response.content


def tiles(strip: np.ndarray, count: int, side: int) -> list[np.ndarray]:
    step = side + GRID_PADDING_PX
    return [strip[:side, i * step : i * step + side] for i in range(count)]


def gif_frames(gif: bytes) -> tuple[Image.Image, list[np.ndarray]]:
    image = Image.open(io.BytesIO(gif))
    frames = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGB")))
    image.seek(0)
    return image, frames


# -- the three answers ------------------------------------------------------------------------


async def test_default_is_a_png_strip_from_start_to_end(client: httpx.AsyncClient) -> None:
    response = await client.post(INTERPOLATE, json=seeds(3, 4, steps=5))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert (response.headers["x-model"], response.headers["x-model-version"]) == (GAN, "1.0.0")
    strip = decode_png(response.content)
    assert strip.shape == (SIDE, 5 * SIDE + 4 * GRID_PADDING_PX, 3)
    frames = tiles(strip, 5, SIDE)
    np.testing.assert_array_equal(frames[0], decode_png(await generate(client, seed=3)))
    np.testing.assert_array_equal(frames[-1], decode_png(await generate(client, seed=4)))
    assert not np.array_equal(frames[1], frames[0])


async def test_frames_are_the_images_of_the_slerp_path(client: httpx.AsyncClient) -> None:
    response = await client.post(INTERPOLATE, json=seeds(3, 4, steps=4), headers=JSON)
    body = response.json()
    assert response.headers["content-type"] == "application/json"
    assert {k: v for k, v in body.items() if k != "frames"} == {
        "model": GAN,
        "version": "1.0.0",
        "method": "slerp",
        "steps": 4,
        "width": SIDE,
        "height": SIDE,
        "truncation": 1.0,
        "scale": 1,
        "start_seed": 3,
        "end_seed": 4,
    }
    assert [(f["index"], f["t"]) for f in body["frames"]] == [
        (0, 0.0),
        (1, pytest.approx(1 / 3)),
        (2, pytest.approx(2 / 3)),
        (3, 1.0),
    ]
    path = interpolate(latent_for_seed(3, 16), latent_for_seed(4, 16), 4, "slerp")
    for frame, latent in zip(body["frames"], path, strict=True):
        expected = await generate(client, latent=latent.tolist())
        assert base64.b64decode(frame["png_base64"]) == expected


async def test_lerp_midpoint_is_the_mean_latent(client: httpx.AsyncClient) -> None:
    a, b = latent_for_seed(1, 16), latent_for_seed(2, 16)
    response = await client.post(
        INTERPOLATE, json=seeds(1, 2, steps=3, method="lerp"), headers=JSON
    )
    middle = base64.b64decode(response.json()["frames"][1]["png_base64"])
    mean = ((a.astype(np.float64) + b) / 2).astype(np.float32)
    assert middle == await generate(client, latent=mean.tolist())


async def test_slerp_and_lerp_differ_between_the_ends(client: httpx.AsyncClient) -> None:
    strips = {}
    for method in ("slerp", "lerp"):
        response = await client.post(INTERPOLATE, json=seeds(1, 2, steps=3, method=method))
        strips[method] = tiles(decode_png(response.content), 3, SIDE)
    np.testing.assert_array_equal(strips["slerp"][0], strips["lerp"][0])
    np.testing.assert_array_equal(strips["slerp"][2], strips["lerp"][2])
    assert not np.array_equal(strips["slerp"][1], strips["lerp"][1])


async def test_gif_loops_forward_and_back(client: httpx.AsyncClient) -> None:
    response = await client.post(
        INTERPOLATE, json=seeds(3, 4, steps=4, scale=2, frame_duration_ms=60), headers=GIF
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/gif"
    assert response.content.startswith(b"GIF89a")
    gif, frames = gif_frames(response.content)
    assert gif.info["loop"] == 0  # forever
    assert gif.info["duration"] == 60
    assert gif.size == (2 * SIDE, 2 * SIDE)
    strip_response = await client.post(INTERPOLATE, json=seeds(3, 4, steps=4, scale=2))
    strip = tiles(decode_png(strip_response.content), 4, 2 * SIDE)
    # 0 1 2 3 2 1, then back to 0; tiny RGB frames have < 256 colours, so the palette is exact.
    assert len(frames) == 6
    for frame, index in zip(frames, [0, 1, 2, 3, 2, 1], strict=True):
        np.testing.assert_array_equal(frame, strip[index])


async def test_gif_without_bounce_plays_forward_once_per_loop(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{VAE}/interpolate", json=seeds(0, 1, steps=3, bounce=False), headers=GIF
    )
    gif, frames = gif_frames(response.content)
    assert len(frames) == 3
    assert gif.info["duration"] == 100  # the default
    first = decode_png(await generate(client, VAE, seed=0))
    np.testing.assert_array_equal(frames[0][:, :, :1], first)  # grayscale values stay exact


async def test_accept_picks_the_format(client: httpx.AsyncClient) -> None:
    for accept, media_type in [
        ("image/gif;q=0.9, application/json;q=0.5", "image/gif"),
        ("image/*", "image/png"),
        ("*/*", "image/png"),
        ("application/json, image/png;q=0.1", "application/json"),
    ]:
        response = await client.post(
            INTERPOLATE, json=seeds(0, 1, steps=2), headers={"Accept": accept}
        )
        assert response.headers["content-type"] == media_type, accept


async def test_latent_ends_truncation_scale_and_columns(client: httpx.AsyncClient) -> None:
    end = latent_for_seed(9, 16).tolist()
    body = {
        "start": {"seed": 5},
        "end": {"latent": end},
        "steps": 6,
        "truncation": 0.5,
        "scale": 3,
        "columns": 4,
    }
    response = await client.post(INTERPOLATE, json=body, headers=JSON)
    payload = response.json()
    assert (payload["start_seed"], payload["end_seed"]) == (5, None)
    assert (payload["width"], payload["height"], payload["scale"]) == (24, 24, 3)
    frames = [base64.b64decode(f["png_base64"]) for f in payload["frames"]]
    assert frames[0] == await generate(client, seed=5, truncation=0.5, scale=3)
    assert frames[-1] == await generate(client, seed=9, truncation=0.5, scale=3)

    strip = decode_png((await client.post(INTERPOLATE, json=body)).content)
    side = 24
    assert strip.shape == (2 * side + GRID_PADDING_PX, 4 * side + 3 * GRID_PADDING_PX, 3)


async def test_same_request_same_bytes(client: httpx.AsyncClient) -> None:
    body = seeds(11, 12, steps=7)
    for headers in ({}, GIF):
        first = await client.post(INTERPOLATE, json=body, headers=headers)
        second = await client.post(INTERPOLATE, json=body, headers=headers)
        assert first.content == second.content


async def test_frames_go_through_the_models_batcher(make_client: ClientFactory) -> None:
    # One queue for all (no priority lane), so the single image simply joins the frames.
    async with make_client(max_batch_size=8, priority_max_items=0) as client:
        model = served(client, GAN)
        with hold_model(model) as held:
            running = asyncio.create_task(generate(client, seed=1))
            await held.wait_entered()
            path = asyncio.create_task(client.post(INTERPOLATE, json=seeds(0, 1, steps=5)))
            await wait_until(lambda: model.batcher.queued_items == 5)
            single = asyncio.create_task(generate(client, seed=2))
            await wait_until(lambda: model.batcher.queued_items == 6)
            held.release()
            assert (await path).status_code == 200
            await running
            await single
        metrics = (await client.get("/metrics")).text
        # The five frames and the queued single image ran as one batch of six.
        assert f'imagegen_batch_size_images_count{{model="{GAN}"}} 2.0' in metrics
        assert f'imagegen_batch_size_images_bucket{{le="4.0",model="{GAN}"}} 1.0' in metrics


async def test_full_queue_is_503(make_client: ClientFactory) -> None:
    async with make_client(max_queue_size=4, max_items_per_request=4, max_batch_size=1) as client:
        model = served(client, GAN)
        with hold_model(model) as held:
            running = asyncio.create_task(generate(client, seed=1))
            await held.wait_entered()
            queued = asyncio.create_task(client.post(INTERPOLATE, json=seeds(0, 1, steps=2)))
            await wait_until(lambda: model.batcher.queued_items == 2)
            response = await client.post(INTERPOLATE, json=seeds(0, 1, steps=3))  # 2 + 3 > 4
            assert_error(response, 503, "queue_full")
            assert response.headers["retry-after"] == "1"
            held.release()
            assert (await queued).status_code == 200
            await running


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (seeds(0, 1, steps=1), "steps"),
        (seeds(0, 1, steps=65), "steps"),
        (seeds(0, 1, steps=4.0), "steps"),
        (seeds(0, 1, steps="4"), "steps"),
        (seeds(0, 1, method="cubic"), "method"),
        (seeds(0, 1, truncation=0), "truncation"),
        (seeds(0, 1, scale=17), "scale"),
        (seeds(0, 1, columns=0), "columns"),
        (seeds(0, 1, frame_duration_ms=5), "frame_duration_ms"),
        (seeds(-1, 1), "start.seed"),
        (seeds(0, 2**63), "end.seed"),
        ({"start": {"seed": 0}}, "end"),
        ({"start": {}, "end": {"seed": 1}}, "exactly one of seed or latent"),
        ({"start": {"seed": 0, "latent": [0.0] * 16}, "end": {"seed": 1}}, "exactly one"),
        ({"start": {"seed": 0}, "end": {"latent": [0.0] * 3}}, "end.latent has 3 values"),
        ({"start": {"latent": [1e300] * 16}, "end": {"seed": 1}}, "not a finite float32"),
        (seeds(0, 1, colour="red"), "colour"),
        ({"start": {"seed": 0, "extra": 1}, "end": {"seed": 1}}, "extra"),
    ],
)
async def test_invalid_values_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    detail = assert_error(await client.post(INTERPOLATE, json=body), 422, "invalid_input")
    assert words in detail["message"]


async def test_nan_latent_is_422(client: httpx.AsyncClient) -> None:
    text = '{"start": {"latent": [NaN' + ", 0.0" * 15 + ']}, "end": {"seed": 1}}'
    response = await client.post(
        INTERPOLATE, content=text, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_input")


async def test_overflowing_path_is_422(client: httpx.AsyncClient) -> None:
    big = float(np.finfo(np.float32).max)
    body = {"start": {"latent": [big] * 16}, "end": {"latent": [big, -big] * 8}, "steps": 3}
    detail = assert_error(await client.post(INTERPOLATE, json=body), 422, "invalid_input")
    assert "float32" in detail["message"]


async def test_more_steps_than_items_per_request_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_items_per_request=4) as client:
        detail = assert_error(
            await client.post(INTERPOLATE, json=seeds(0, 1, steps=5)), 413, "too_many_items"
        )
        assert "limit is 4" in detail["message"]
        assert (await client.post(INTERPOLATE, json=seeds(0, 1, steps=4))).status_code == 200


async def test_other_errors(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.post(INTERPOLATE, json=seeds(0, 1), headers={"Accept": "text/html"}),
        406,
        "not_acceptable",
    )
    assert_error(
        await client.post("/v1/models/nope/interpolate", json=seeds(0, 1)), 404, "model_not_found"
    )
    assert_error(await client.post(INTERPOLATE, content=b"{oops"), 400, "malformed_json")
    assert_error(await client.get(INTERPOLATE), 405, "method_not_allowed")


async def test_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_body_bytes=2048) as client:
        body = {"start": {"latent": [0.123456789] * 16}, "end": {"seed": 1}, "pad": "x" * 4096}
        response = await client.post(INTERPOLATE, content=json.dumps(body))
        assert_error(response, 413, "payload_too_large")


# -- a seed's latent ----------------------------------------------------------------------------


async def test_seed_latent_is_the_documented_vector(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/models/{GAN}/latents/42")
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["seed"], body["latent_dim"]) == (GAN, 42, 16)
    np.testing.assert_array_equal(np.asarray(body["latent"], np.float32), latent_for_seed(42, 16))
    # Sent back as a latent, it gives the seed's image bit for bit.
    assert await generate(client, latent=body["latent"]) == await generate(client, seed=42)


async def test_largest_seed_latent(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/models/{VAE}/latents/{2**63 - 1}")
    assert response.json()["seed"] == 2**63 - 1
    assert len(response.json()["latent"]) == 4


@pytest.mark.parametrize("seed", ["-1", "abc", str(2**63), "1.5", "0x10"])
async def test_bad_seed_latent_is_422(client: httpx.AsyncClient, seed: str) -> None:
    assert_error(await client.get(f"/v1/models/{GAN}/latents/{seed}"), 422, "invalid_input")


async def test_seed_latent_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/models/nope/latents/1"), 404, "model_not_found")
    response = await client.get(f"/v1/models/{GAN}/latents/1", headers={"Accept": "image/png"})
    assert_error(response, 406, "not_acceptable")


# -- documentation ---------------------------------------------------------------------------


async def test_endpoints_are_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/models/{model}/interpolate"]["post"]
    assert set(operation["responses"]["200"]["content"]) == {
        "image/png",
        "image/gif",
        "application/json",
    }
    assert {"413", "422", "406", "404", "503"} <= set(operation["responses"])
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"start", "end", "steps", "method", "truncation", "scale"} <= set(
        body_schema["properties"]
    )
    # Nested models are inlined: a "#/$defs/..." reference would dangle inside OpenAPI.
    assert "#/$defs/" not in json.dumps(operation)
    assert set(body_schema["properties"]["start"]["properties"]) == {"seed", "latent", "class"}
    assert "/v1/models/{model}/latents/{seed}" in schema["paths"]
    assert "/" not in schema["paths"]  # the playground page is not part of the API
