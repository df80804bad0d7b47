"""PNG encoding as the batch's second stage: in the encoder thread while another batch waits
for the model, in the inference thread when nothing waits; the bytes are the same either way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import imaging
from tests.service.conftest import GAN
from tests.service.helpers import decode_png, hold_model, reference_for_seed, served, wait_until

GENERATE = f"/v1/models/{GAN}/generate"


@pytest.fixture
def encoding_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the thread of every `encode_png` call, in order."""
    threads: list[str] = []
    original = imaging.encode_png

    def recording(image: np.ndarray, scale: int = 1) -> bytes:
        threads.append(threading.current_thread().name)
        return original(image, scale)

    monkeypatch.setattr(imaging, "encode_png", recording)
    yield threads


async def test_a_lone_request_is_encoded_in_the_inference_thread(
    client: httpx.AsyncClient, models_dir: Path, encoding_threads: list[str]
) -> None:
    response = await client.post(GENERATE, json={"seed": 5})
    assert response.status_code == 200
    assert [name.split("_")[0] for name in encoding_threads] == [f"infer-{GAN}"]
    np.testing.assert_array_equal(
        decode_png(response.content), reference_for_seed(models_dir / GAN, 5)
    )


async def test_a_batch_is_encoded_in_the_encoder_thread_while_the_next_one_waits(
    client: httpx.AsyncClient, models_dir: Path, encoding_threads: list[str]
) -> None:
    model = served(client, GAN)
    with hold_model(model) as held:
        first = asyncio.create_task(client.post(GENERATE, json={"seed": 1}))
        await held.wait_entered()
        rest = [asyncio.create_task(client.post(GENERATE, json={"seed": s})) for s in (2, 3)]
        await wait_until(lambda: model.batcher.queued_items == 2)
        held.release()
        responses = await asyncio.gather(first, *rest)
    # Seed 1 left the model with two images queued: encoded off the inference thread. Seeds
    # 2 and 3 then ran as one batch with nothing queued: encoded where they ran.
    assert [name.split("_")[0] for name in encoding_threads] == [
        f"encode-{GAN}",
        f"infer-{GAN}",
        f"infer-{GAN}",
    ]
    for seed, response in zip((1, 2, 3), responses, strict=True):
        assert response.status_code == 200
        np.testing.assert_array_equal(
            decode_png(response.content), reference_for_seed(models_dir / GAN, seed)
        )
