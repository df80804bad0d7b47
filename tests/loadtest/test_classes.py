"""The load tester's --class: requests for class-conditional models, checked by the real app."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from service.loadtest.target import RequestFactory, Target, TargetError, preflight
from service.runtime.card import CARD_FILENAME, ONNX_FILENAME
from service.settings import Settings
from tests.service.conftest import (
    CGAN,
    GAN,
    TINY_CLASSES,
    build_generator,
    card_for,
    serve_in_process,
)

CLASSES = list(TINY_CLASSES[:3])


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name, options in (
        (CGAN, {"latent_dim": 6, "height": 8, "width": 8, "channels": 1, "num_classes": 3}),
        (GAN, {"latent_dim": 4, "height": 4, "width": 4, "channels": 1}),
    ):
        folder = root / name
        folder.mkdir(parents=True)
        model = build_generator(**options)  # type: ignore[arg-type]
        onnx.save(model, str(folder / ONNX_FILENAME))
        card = card_for(name, model, folder / ONNX_FILENAME)
        (folder / CARD_FILENAME).write_text(json.dumps(card), encoding="utf-8")
    return root


def settings(models_dir: Path) -> Settings:
    return Settings(models_dir=models_dir, max_batch_delay_ms=1.0, intra_op_threads=1)


@pytest.mark.parametrize("endpoint", ["single", "batch", "get"])
async def test_class_requests_are_what_the_service_takes(models_dir: Path, endpoint: str) -> None:
    items = 4 if endpoint == "batch" else 1
    async with serve_in_process(settings(models_dir)) as client:
        for choice, expected in (("dog", {"Dog"}), ("2", {"Ankle boot"}), ("random", None)):
            target = Target(
                "http://test", CGAN, endpoint=endpoint, items=items, class_choice=choice
            )  # type: ignore[arg-type]
            classes = await preflight(client, target)
            assert classes == CLASSES
            factory = RequestFactory(target, first_seed=100, classes=classes)
            seen: Counter[str] = Counter()
            for _ in range(30):
                method, url, body = factory.next()
                headers = target.headers | {"accept": "application/json"}
                if endpoint == "get":
                    headers["accept"] = "image/png"
                response = await client.request(method, url, content=body, headers=headers)
                assert response.status_code == 200, response.text
                if endpoint == "batch":
                    seen.update(image["class"] for image in response.json()["images"])
                else:
                    seen[response.headers["x-class"]] += 1
            if expected is None:
                assert set(seen) == set(CLASSES)  # random classes: all of them turn up
            else:
                assert set(seen) == expected


def test_the_lean_payloads_carry_the_class() -> None:
    get = RequestFactory(
        Target("http://127.0.0.1:9", CGAN, endpoint="get", class_choice="Cat"),
        first_seed=5,
        classes=CLASSES,
    )
    assert get.next_payload().startswith(
        f"GET /v1/models/{CGAN}/images/5.png?class=0 HTTP/1.1\r\n".encode()
    )
    plain = RequestFactory(Target("http://127.0.0.1:9", GAN, endpoint="get"), first_seed=5)
    assert plain.next_payload().startswith(f"GET /v1/models/{GAN}/images/5.png HTTP/1.1".encode())
    single = RequestFactory(
        Target("http://127.0.0.1:9", CGAN, class_choice="ankle boot"), first_seed=9, classes=CLASSES
    )
    assert single.next_payload().endswith(b'\r\n\r\n{"seed":9,"class":2}')


async def test_a_class_that_does_not_fit_is_a_clear_target_error(models_dir: Path) -> None:
    async with serve_in_process(settings(models_dir)) as client:
        with pytest.raises(
            TargetError, match=f"model {GAN} is not class-conditional; drop --class"
        ):
            await preflight(client, Target("http://test", GAN, class_choice="random"))
        with pytest.raises(TargetError, match=r"'zebra' is not a class.*0 'Cat', 1 'Dog'"):
            await preflight(client, Target("http://test", CGAN, class_choice="zebra"))
        assert await preflight(client, Target("http://test", GAN)) == []
