"""POST generate and GET images/{seed}.png: the seed contract, formats, options, caching."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np

from service.runtime.card import latent_for_seed
from tests.service.conftest import GAN, VAE
from tests.service.helpers import decode_png, reference_for_seed


async def test_seed_gives_the_documented_image_as_png(
    client: httpx.AsyncClient, models_dir: Path
) -> None:
    response = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 7})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "7"
    assert response.headers["x-model"] == GAN
    assert response.headers["x-model-version"] == "1.0.0"
    pixels = decode_png(response.content)
    assert pixels.shape == (8, 8, 3)
    np.testing.assert_array_equal(pixels, reference_for_seed(models_dir / GAN, 7))


async def test_grayscale_model(client: httpx.AsyncClient, models_dir: Path) -> None:
    response = await client.post(f"/v1/models/{VAE}/generate", json={"seed": 3})
    assert response.status_code == 200
    np.testing.assert_array_equal(
        decode_png(response.content), reference_for_seed(models_dir / VAE, 3)
    )


async def test_json_response_carries_the_same_png(client: httpx.AsyncClient) -> None:
    png = (await client.post(f"/v1/models/{GAN}/generate", json={"seed": 11})).content
    response = await client.post(
        f"/v1/models/{GAN}/generate", json={"seed": 11}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["seed"] == 11
    assert (body["model"], body["version"]) == (GAN, "1.0.0")
    assert (body["width"], body["height"], body["scale"], body["truncation"]) == (8, 8, 1, 1.0)
    assert base64.b64decode(body["png_base64"]) == png


async def test_accept_preference_picks_json_over_png(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{GAN}/generate",
        json={"seed": 1},
        headers={"Accept": "image/png;q=0.5, application/json"},
    )
    assert response.headers["content-type"] == "application/json"
    response = await client.post(
        f"/v1/models/{GAN}/generate", json={"seed": 1}, headers={"Accept": "image/*"}
    )
    assert response.headers["content-type"] == "image/png"


async def test_empty_body_draws_a_random_seed_that_reproduces(client: httpx.AsyncClient) -> None:
    first = await client.post(f"/v1/models/{GAN}/generate", json={})
    second = await client.post(f"/v1/models/{GAN}/generate", content=b"")
    assert first.status_code == second.status_code == 200
    seed = int(first.headers["x-seed"])
    assert 0 <= seed < 2**63
    assert first.headers["x-seed"] != second.headers["x-seed"]
    again = await client.post(f"/v1/models/{GAN}/generate", json={"seed": seed})
    assert again.content == first.content


async def test_latent_gives_the_same_image_as_its_seed(client: httpx.AsyncClient) -> None:
    latent = latent_for_seed(5, 16).tolist()
    by_latent = await client.post(f"/v1/models/{GAN}/generate", json={"latent": latent})
    by_seed = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 5})
    assert by_latent.status_code == 200
    assert "x-seed" not in by_latent.headers
    assert by_latent.content == by_seed.content
    body = (
        await client.post(
            f"/v1/models/{GAN}/generate",
            json={"latent": latent},
            headers={"Accept": "application/json"},
        )
    ).json()
    assert body["seed"] is None


async def test_truncation_scales_the_latent(client: httpx.AsyncClient, models_dir: Path) -> None:
    truncated = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 5, "truncation": 0.5})
    scaled_latent = (latent_for_seed(5, 16) * np.float32(0.5)).tolist()
    by_latent = await client.post(f"/v1/models/{GAN}/generate", json={"latent": scaled_latent})
    assert truncated.content == by_latent.content
    np.testing.assert_array_equal(
        decode_png(truncated.content), reference_for_seed(models_dir / GAN, 5, truncation=0.5)
    )
    plain = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 5})
    assert plain.content != truncated.content


async def test_scale_upsamples_nearest_neighbour(client: httpx.AsyncClient) -> None:
    small = decode_png((await client.post(f"/v1/models/{GAN}/generate", json={"seed": 2})).content)
    response = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 2, "scale": 4})
    big = decode_png(response.content)
    assert big.shape == (32, 32, 3)
    np.testing.assert_array_equal(big[::4, ::4], small)
    np.testing.assert_array_equal(big[3::4, 3::4], small)


async def test_seeded_get_matches_post_and_is_cacheable(client: httpx.AsyncClient) -> None:
    posted = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 42})
    response = await client.get(f"/v1/models/{GAN}/images/42.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == posted.content
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = await client.get(f"/v1/models/{GAN}/images/42.png")
    assert again.headers["etag"] == etag
    other = await client.get(f"/v1/models/{GAN}/images/43.png")
    assert other.headers["etag"] != etag


async def test_if_none_match_answers_304_without_a_body(client: httpx.AsyncClient) -> None:
    etag = (await client.get(f"/v1/models/{GAN}/images/9.png")).headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = await client.get(
            f"/v1/models/{GAN}/images/9.png", headers={"If-None-Match": header}
        )
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = await client.get(f"/v1/models/{GAN}/images/9.png", headers={"If-None-Match": '"x"'})
    assert stale.status_code == 200


async def test_seeded_get_takes_scale_and_truncation(client: httpx.AsyncClient) -> None:
    posted = await client.post(
        f"/v1/models/{GAN}/generate", json={"seed": 4, "scale": 2, "truncation": 0.7}
    )
    response = await client.get(f"/v1/models/{GAN}/images/4.png?scale=2&truncation=0.7")
    assert response.content == posted.content
    plain = await client.get(f"/v1/models/{GAN}/images/4.png")
    assert plain.headers["etag"] != response.headers["etag"]


async def test_largest_seed_is_accepted(client: httpx.AsyncClient) -> None:
    largest = 2**63 - 1
    response = await client.post(f"/v1/models/{GAN}/generate", json={"seed": largest})
    assert response.status_code == 200
    assert response.headers["x-seed"] == str(largest)
    assert (await client.get(f"/v1/models/{GAN}/images/{largest}.png")).status_code == 200


async def test_extreme_but_finite_latent_is_not_an_error(client: httpx.AsyncClient) -> None:
    latent = [3.0e38, -3.0e38] * 8
    response = await client.post(f"/v1/models/{GAN}/generate", json={"latent": latent})
    assert response.status_code == 200
    assert decode_png(response.content).shape == (8, 8, 3)
