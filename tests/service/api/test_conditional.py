"""Class-conditional models through the v1 API: classes on every route, the seed contract
(seed s means class s % num_classes), errors, ETags, and bytes that do not depend on
what shares a batch."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.runtime.card import latent_for_seed
from tests.service.conftest import CGAN, GAN, TINY_CLASSES, VAE, ModelFactory, make_conditional
from tests.service.helpers import (
    assert_error,
    decode_png,
    hold_model,
    reference_for_seed,
    reference_images,
    served,
)

CLASSES = list(TINY_CLASSES[:3])  # the tiny conditional model's classes: Cat, Dog, Ankle boot


@pytest.fixture
def models_dir(tmp_path: Path, make_model: ModelFactory) -> Path:
    root = tmp_path / "models"
    make_model(GAN, root, latent_dim=16, height=8, width=8, channels=3, conv=True)
    make_model(VAE, root, latent_dim=4, height=6, width=6, channels=1, activation="Sigmoid")
    make_conditional(make_model, root)
    return root


def cgan_dir(models_dir: Path) -> Path:
    return models_dir / CGAN


def one_hot(index: int) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[[index]]


async def post_png(client: httpx.AsyncClient, body: dict[str, object]) -> httpx.Response:
    return await client.post(f"/v1/models/{CGAN}/generate", json=body)


async def test_the_model_lists_its_classes(client: httpx.AsyncClient) -> None:
    info = (await client.get(f"/v1/models/{CGAN}")).json()
    assert info["classes"] == CLASSES
    assert info["conditioning"] == {"input_name": "class_weights", "classes": CLASSES}
    listing = {m["name"]: m for m in (await client.get("/v1/models")).json()["models"]}
    assert listing[CGAN]["classes"] == CLASSES
    assert "classes" not in listing[GAN]  # unconditional models are described as before
    assert "classes" not in (await client.get(f"/v1/models/{GAN}")).json()


@pytest.mark.parametrize("given", ["dog", "DOG", " Dog ", 1, "1"])
async def test_a_class_by_name_or_index(
    client: httpx.AsyncClient, models_dir: Path, given: object
) -> None:
    response = await post_png(client, {"seed": 5, "class": given})
    assert response.status_code == 200, response.text
    assert response.headers["x-class"] == "Dog"
    expected = reference_for_seed(cgan_dir(models_dir), 5, class_index=1)
    np.testing.assert_array_equal(decode_png(response.content), expected)


async def test_a_seed_without_a_class_is_class_seed_mod_num_classes(
    client: httpx.AsyncClient, models_dir: Path
) -> None:
    for seed in (0, 1, 2, 3, 7):
        response = await post_png(client, {"seed": seed})
        assert response.status_code == 200
        assert response.headers["x-class"] == CLASSES[seed % 3]
        expected = reference_for_seed(cgan_dir(models_dir), seed, class_index=seed % 3)
        np.testing.assert_array_equal(decode_png(response.content), expected)
    # ... so it is the same image as asking for that class by name.
    named = await post_png(client, {"seed": 7, "class": CLASSES[7 % 3]})
    assert named.content == (await post_png(client, {"seed": 7})).content
    # and the classes really differ: the same seed as another class is another image.
    other = await post_png(client, {"seed": 7, "class": "Cat"})
    assert other.content != named.content


async def test_a_random_seed_reports_its_class(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{CGAN}/generate", json={}, headers={"accept": "application/json"}
    )
    body = response.json()
    assert body["class"] == CLASSES[body["seed"] % 3] == response.headers["x-class"]


async def test_json_answers_name_the_class(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/models/{CGAN}/generate",
        json={"seed": 4, "class": "ankle BOOT"},
        headers={"accept": "application/json"},
    )
    assert response.json()["class"] == "Ankle boot"
    plain = await client.post(
        f"/v1/models/{GAN}/generate", json={"seed": 4}, headers={"accept": "application/json"}
    )
    assert "class" not in plain.json()
    assert "x-class" not in plain.headers


async def test_a_latent_needs_a_class(client: httpx.AsyncClient, models_dir: Path) -> None:
    latent = latent_for_seed(11, 6)
    response = await post_png(client, {"latent": latent.tolist()})
    error = assert_error(response, 422, "invalid_input")
    assert "class" in error["message"]
    assert all(name in error["message"] for name in CLASSES)
    response = await post_png(client, {"latent": latent.tolist(), "class": "Cat"})
    assert response.status_code == 200
    assert "x-seed" not in response.headers and response.headers["x-class"] == "Cat"
    expected = reference_images(cgan_dir(models_dir), latent[None], one_hot(0))[0]
    np.testing.assert_array_equal(decode_png(response.content), expected)


@pytest.mark.parametrize("given", ["Horse", "", 3, -1, "cats", True, 1.0, None])
async def test_an_unknown_class_is_a_422_listing_the_classes(
    client: httpx.AsyncClient, given: object
) -> None:
    response = await post_png(client, {"seed": 1, "class": given})
    if given is None:  # null is "no class"
        assert response.status_code == 200
        return
    error = assert_error(response, 422, "invalid_input")
    if isinstance(given, str | int) and not isinstance(given, bool) and given != "":
        assert all(name in error["message"] for name in CLASSES), error["message"]


async def test_unconditional_models_refuse_a_class(client: httpx.AsyncClient) -> None:
    for name in (GAN, VAE):
        response = await client.post(
            f"/v1/models/{name}/generate", json={"seed": 1, "class": "Cat"}
        )
        assert "not class-conditional" in assert_error(response, 422, "invalid_input")["message"]
        response = await client.get(f"/v1/models/{name}/images/1.png?class=Cat")
        assert_error(response, 422, "invalid_input")
        response = await client.post(
            f"/v1/models/{name}/generate/batch", json={"seeds": [1, 2], "classes": [0, 1]}
        )
        assert_error(response, 422, "invalid_input")
        response = await client.post(
            f"/v1/models/{name}/interpolate",
            json={"start": {"seed": 1, "class": 0}, "end": {"seed": 2}},
        )
        assert_error(response, 422, "invalid_input")


async def test_seeded_image_urls_take_a_class(client: httpx.AsyncClient) -> None:
    url = f"/v1/models/{CGAN}/images/8.png"
    default = await client.get(url)
    as_dog = await client.get(url + "?class=dog")
    as_index = await client.get(url + "?class=1")
    as_cat = await client.get(url + "?class=Cat")
    posted = await post_png(client, {"seed": 8, "class": "Dog"})
    assert default.headers["x-class"] == CLASSES[8 % 3] == "Ankle boot"
    assert as_dog.content == as_index.content == posted.content
    assert as_dog.headers["etag"] == as_index.headers["etag"]
    etags = {default.headers["etag"], as_dog.headers["etag"], as_cat.headers["etag"]}
    assert len(etags) == 3  # the class is part of the ETag
    # The default class and the same class named give one ETag (the same bytes).
    explicit = await client.get(url + "?class=ankle%20boot")
    assert explicit.headers["etag"] == default.headers["etag"]
    assert explicit.content == default.content
    cached = await client.get(url + "?class=Dog", headers={"if-none-match": as_dog.headers["etag"]})
    assert cached.status_code == 304
    stale = await client.get(url + "?class=Cat", headers={"if-none-match": as_dog.headers["etag"]})
    assert stale.status_code == 200
    bad = await client.get(url + "?class=zebra")
    assert "Cat" in assert_error(bad, 422, "invalid_input")["message"]


async def test_batches_take_classes(client: httpx.AsyncClient, models_dir: Path) -> None:
    url = f"/v1/models/{CGAN}/generate/batch"
    per_item = await client.post(url, json={"seeds": [3, 3, 3, 4], "classes": [0, "dog", 2, "CAT"]})
    images = per_item.json()["images"]
    assert [image["class"] for image in images] == ["Cat", "Dog", "Ankle boot", "Cat"]
    for image, (seed, index) in zip(images, [(3, 0), (3, 1), (3, 2), (4, 0)], strict=True):
        alone = await post_png(client, {"seed": seed, "class": index})
        assert base64.b64decode(image["png_base64"]) == alone.content
    for_all = (await client.post(url, json={"count": 4, "seed": 10, "class": "Dog"})).json()
    assert [image["class"] for image in for_all["images"]] == ["Dog"] * 4
    by_seed = (await client.post(url, json={"count": 6, "seed": 30})).json()
    assert [image["class"] for image in by_seed["images"]] == [
        CLASSES[s % 3] for s in range(30, 36)
    ]
    latents = [latent_for_seed(s, 6).tolist() for s in (1, 2)]
    response = await client.post(url, json={"latents": latents, "classes": ["Dog", "Cat"]})
    expected = reference_images(
        cgan_dir(models_dir),
        np.array(latents, np.float32),
        np.concatenate([one_hot(1), one_hot(0)]),
    )
    got = [decode_png(base64.b64decode(i["png_base64"])) for i in response.json()["images"]]
    np.testing.assert_array_equal(np.stack(got), expected)
    grid = await client.post(
        url, json={"seeds": [1, 2], "class": "Cat"}, headers={"accept": "image/png"}
    )
    assert grid.headers["x-classes"] == "0,0"


async def test_batch_class_errors(client: httpx.AsyncClient) -> None:
    url = f"/v1/models/{CGAN}/generate/batch"
    latents = [latent_for_seed(s, 6).tolist() for s in (1, 2)]
    missing = await client.post(url, json={"latents": latents})
    assert "class" in assert_error(missing, 422, "invalid_input")["message"]
    wrong_length = await client.post(url, json={"seeds": [1, 2, 3], "classes": [0, 1]})
    assert "classes" in assert_error(wrong_length, 422, "invalid_input")["message"]
    both = await client.post(url, json={"seeds": [1], "classes": [0], "class": 0})
    assert_error(both, 422, "invalid_input")
    unknown = await client.post(url, json={"seeds": [1, 2], "classes": [0, "zebra"]})
    message = assert_error(unknown, 422, "invalid_input")["message"]
    assert "classes[1]" in message and "Ankle boot" in message


async def test_interpolation_moves_the_class_weights_with_the_latent(
    client: httpx.AsyncClient, models_dir: Path
) -> None:
    steps = 5
    response = await client.post(
        f"/v1/models/{CGAN}/interpolate",
        json={
            "start": {"seed": 3, "class": "Cat"},
            "end": {"seed": 9, "class": "Dog"},
            "steps": steps,
            "method": "lerp",
        },
        headers={"accept": "application/json"},
    )
    body = response.json()
    assert (body["start_class"], body["end_class"]) == ("Cat", "Dog")
    frames = [decode_png(base64.b64decode(f["png_base64"])) for f in body["frames"]]
    t = np.linspace(0.0, 1.0, steps)[:, None]
    a, b = latent_for_seed(3, 6).astype(np.float64), latent_for_seed(9, 6).astype(np.float64)
    latents = ((1 - t) * a + t * b).astype(np.float32)
    weights = ((1 - t) * one_hot(0) + t * one_hot(1)).astype(np.float32)
    latents[0], latents[-1] = a, b
    expected = reference_images(cgan_dir(models_dir), latents, weights)
    np.testing.assert_array_equal(np.stack(frames), expected)
    # The ends are the images of the two (seed, class) pairs.
    start = await post_png(client, {"seed": 3, "class": "Cat"})
    np.testing.assert_array_equal(frames[0], decode_png(start.content))
    # Without classes the seeds' own classes apply; a latent end needs one.
    default = await client.post(
        f"/v1/models/{CGAN}/interpolate",
        json={"start": {"seed": 3}, "end": {"seed": 4}, "steps": 2},
        headers={"accept": "application/json"},
    )
    assert (default.json()["start_class"], default.json()["end_class"]) == ("Cat", "Dog")
    no_class = await client.post(
        f"/v1/models/{CGAN}/interpolate",
        json={"start": {"latent": latent_for_seed(1, 6).tolist()}, "end": {"seed": 4}},
    )
    assert "start" in assert_error(no_class, 422, "invalid_input")["message"]
    plain = await client.post(
        f"/v1/models/{GAN}/interpolate",
        json={"start": {"seed": 3}, "end": {"seed": 4}, "steps": 2},
        headers={"accept": "application/json"},
    )
    assert "start_class" not in plain.json()


async def test_mixed_classes_share_a_batch_and_keep_their_bytes(
    make_client: object, models_dir: Path
) -> None:
    """Requests for different classes (and seeds without one) queued together run as one
    batch, each answered with exactly the bytes it gets alone."""
    requests = [{"seed": 21, "class": c} for c in (0, 1, 2)] + [{"seed": 22}, {"seed": 23}]
    async with make_client(max_batch_size=8, max_batch_delay_ms=50.0) as client:  # type: ignore[operator]
        alone = [(await post_png(client, body)).content for body in requests]
        model = served(client, CGAN)
        sizes: list[int] = []
        original = model.loaded.generator.generate

        def recording(latents: np.ndarray, *weights: np.ndarray) -> np.ndarray:
            sizes.append(len(latents))
            return original(latents, *weights)

        model.loaded.generator.generate = recording  # type: ignore[method-assign]
        with hold_model(model) as held:
            blocker = asyncio.create_task(post_png(client, {"seed": 99}))
            await held.wait_entered()
            together = [asyncio.create_task(post_png(client, body)) for body in requests]
            await asyncio.sleep(0.2)  # all five are queued behind the held run
            held.release()
            await blocker
            answers = [(await task).content for task in together]
        assert answers == alone
        assert len(requests) in sizes  # the five ran as one batch
