"""A client that disconnects while queued is dropped before its images are computed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

from tests.service.conftest import GAN
from tests.service.helpers import PATIENCE_S, hold_model, served, wait_until


async def test_disconnected_client_is_dropped_before_compute(client: httpx.AsyncClient) -> None:
    app = client.app  # type: ignore[attr-defined]
    model = served(client, GAN)
    rows_computed: list[int] = []
    generator = model.loaded.generator
    real_generate = generator.generate

    def counting(latents: np.ndarray) -> np.ndarray:
        rows_computed.append(latents.shape[0])
        return real_generate(latents)

    generator.generate = counting  # type: ignore[method-assign]
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/models/{GAN}/generate/batch",
        "raw_path": f"/v1/models/{GAN}/generate/batch".encode(),
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
        "root_path": "",
    }
    with hold_model(model) as held:
        busy = asyncio.create_task(client.post(f"/v1/models/{GAN}/generate", json={"seed": 1}))
        await held.wait_entered()
        await inbox.put({"type": "http.request", "body": b'{"seeds": [5, 6, 7]}'})
        leaving = asyncio.create_task(app(scope, inbox.get, send))
        await wait_until(lambda: model.batcher.queued_items == 3)
        await inbox.put({"type": "http.disconnect"})
        await asyncio.wait_for(leaving, PATIENCE_S)
        assert model.batcher.queued_items == 0
        held.release()
        assert (await busy).status_code == 200
    generator.generate = real_generate  # type: ignore[method-assign]
    assert rows_computed == [1]  # only the busy request's image was computed
    assert sent[0]["status"] == 499
