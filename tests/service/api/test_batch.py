"""POST generate/batch: seeds, latents, count+seed; JSON with base64 PNGs or one grid PNG."""

from __future__ import annotations

import base64

import httpx
import numpy as np

from service.imaging import GRID_PADDING_PX
from service.runtime.card import latent_for_seed
from tests.service.conftest import GAN, VAE, ClientFactory
from tests.service.helpers import decode_png


async def single(client: httpx.AsyncClient, model: str, seed: int, **options: object) -> bytes:
    response = await client.post(f"/v1/models/{model}/generate", json={"seed": seed, **options})
    assert response.status_code == 200
    return response.content


async def test_seeds_give_the_single_images(client: httpx.AsyncClient) -> None:
    seeds = [3, 1, 4, 1, 5]
    response = await client.post(f"/v1/models/{GAN}/generate/batch", json={"seeds": seeds})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"], body["width"], body["height"]) == (GAN, "1.0.0", 8, 8)
    assert [image["seed"] for image in body["images"]] == seeds
    for image in body["images"]:
        assert base64.b64decode(image["png_base64"]) == await single(client, GAN, image["seed"])


async def test_count_and_seed_give_consecutive_seeds(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{VAE}/generate/batch", json={"count": 4, "seed": 10, "scale": 2}
    )
    body = response.json()
    assert [image["seed"] for image in body["images"]] == [10, 11, 12, 13]
    assert (body["width"], body["height"]) == (12, 12)
    assert base64.b64decode(body["images"][2]["png_base64"]) == await single(
        client, VAE, 12, scale=2
    )


async def test_count_without_seed_draws_a_random_start(client: httpx.AsyncClient) -> None:
    body = (await client.post(f"/v1/models/{GAN}/generate/batch", json={"count": 3})).json()
    seeds = [image["seed"] for image in body["images"]]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]


async def test_latents_give_their_images(client: httpx.AsyncClient) -> None:
    latents = [latent_for_seed(seed, 16).tolist() for seed in (8, 9)]
    body = (await client.post(f"/v1/models/{GAN}/generate/batch", json={"latents": latents})).json()
    assert [image["seed"] for image in body["images"]] == [None, None]
    assert base64.b64decode(body["images"][1]["png_base64"]) == await single(client, GAN, 9)


async def test_grid_png_tiles_the_images(client: httpx.AsyncClient) -> None:
    seeds = [0, 1, 2, 3, 4]
    response = await client.post(
        f"/v1/models/{GAN}/generate/batch",
        json={"seeds": seeds, "columns": 2},
        headers={"Accept": "image/png"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-seeds"] == "0,1,2,3,4"
    grid = decode_png(response.content)
    step = 8 + GRID_PADDING_PX
    assert grid.shape == (3 * 8 + 2 * GRID_PADDING_PX, 2 * 8 + GRID_PADDING_PX, 3)
    for index, seed in enumerate(seeds):
        row, col = divmod(index, 2)
        tile = grid[row * step : row * step + 8, col * step : col * step + 8]
        np.testing.assert_array_equal(tile, decode_png(await single(client, GAN, seed)))


async def test_grid_defaults_to_a_square_layout(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{VAE}/generate/batch",
        json={"count": 4, "seed": 0},
        headers={"Accept": "image/png"},
    )
    assert decode_png(response.content).shape == (2 * 6 + 2, 2 * 6 + 2, 1)


async def test_batch_larger_than_max_batch_size_is_split_and_ordered(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_batch_size=3) as client:
        seeds = list(range(20, 30))
        body = (await client.post(f"/v1/models/{GAN}/generate/batch", json={"seeds": seeds})).json()
        assert [image["seed"] for image in body["images"]] == seeds
        for image in body["images"]:
            assert base64.b64decode(image["png_base64"]) == await single(client, GAN, image["seed"])
        metrics = (await client.get("/metrics")).text
        assert f'imagegen_batch_size_images_bucket{{le="4.0",model="{GAN}"}}' in metrics
