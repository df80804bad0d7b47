"""A seed gives the same PNG bytes alone, in batches of any size and mix, and after a restart."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest

from service.runtime.card import latent_for_seed
from service.runtime.providers import plan_providers
from service.runtime.registry import load_model
from tests.service.conftest import GAN, VAE, ClientFactory

SEEDS = list(range(48))


@pytest.mark.parametrize("model", [GAN, VAE])
def test_rows_are_bit_identical_for_every_batch_size_and_position(
    models_dir: Path, model: str
) -> None:
    """The float output (before uint8) of a row never depends on its batch."""
    generator = load_model(models_dir / model, plan_providers("cpu"), max_batch_size=32).generator
    dim = generator.card.latent_dim
    latents = np.stack([latent_for_seed(seed, dim) for seed in SEEDS])
    alone = np.concatenate([generator.run_raw(latents[i : i + 1]) for i in range(len(SEEDS))])
    rng = np.random.default_rng(0)
    for size in (2, 3, 7, 8, 16, 31, 32, 33, 48):
        order = rng.permutation(len(SEEDS))[:size]
        np.testing.assert_array_equal(generator.run_raw(latents[order]), alone[order])


async def png_by_seed(client_factory: ClientFactory, **settings: object) -> dict[int, bytes]:
    """Every seed alone, then in mixed batches and concurrent singles; all must agree."""
    async with client_factory(**settings) as client:
        singles = {}
        for seed in SEEDS:
            response = await client.post(f"/v1/models/{GAN}/generate", json={"seed": seed})
            singles[seed] = response.content
        rng = np.random.default_rng(1)
        for size in (2, 5, 16, 48):
            seeds = [int(s) for s in rng.choice(SEEDS, size=size, replace=False)]
            body = (
                await client.post(f"/v1/models/{GAN}/generate/batch", json={"seeds": seeds})
            ).json()
            for image in body["images"]:
                assert base64.b64decode(image["png_base64"]) == singles[image["seed"]]
        # Concurrent requests: the batcher mixes them into batches of varying size.
        responses = await asyncio.gather(
            *(client.post(f"/v1/models/{GAN}/generate", json={"seed": s}) for s in SEEDS)
        )
        for seed, response in zip(SEEDS, responses, strict=True):
            assert response.content == singles[seed]
        return singles


async def test_same_bytes_alone_in_batches_and_across_restarts(
    make_client: ClientFactory,
) -> None:
    first = await png_by_seed(make_client, max_batch_size=8, max_batch_delay_ms=5)
    restarted = await png_by_seed(make_client, max_batch_size=32, intra_op_threads=0)
    padded = await png_by_seed(make_client, batch_padding="always", max_batch_size=4)
    assert first == restarted == padded
    assert len(set(first.values())) == len(SEEDS)  # the seeds really differ
