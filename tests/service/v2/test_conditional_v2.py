"""The Open Inference Protocol on a class-conditional model: a `class` input (INT64 [n]) beside
`seed` or `latent`, the same pixels as v1 for the same seed and class, and 400s, never 500s."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from service.settings import Settings
from tests.service.conftest import serve_in_process

MODELS = Path(__file__).resolve().parents[3] / "models"
MODEL = "fashion-cgan"
INFER = f"/v2/models/{MODEL}/infer"


def seed_tensor(*seeds: int) -> dict[str, object]:
    return {"name": "seed", "shape": [len(seeds)], "datatype": "INT64", "data": list(seeds)}


def class_tensor(*classes: int) -> dict[str, object]:
    return {"name": "class", "shape": [len(classes)], "datatype": "INT64", "data": list(classes)}


async def test_class_input_gives_the_v1_png_for_that_seed_and_class() -> None:
    async with serve_in_process(Settings(models_dir=MODELS, grpc_port=0)) as http:
        meta = (await http.get(f"/v2/models/{MODEL}")).json()
        assert {"name": "class", "datatype": "INT64", "shape": [-1]} in meta["inputs"]
        body = {"inputs": [seed_tensor(7, 7), class_tensor(5, 9)], "outputs": [{"name": "png"}]}
        response = await http.post(INFER, json=body)
        assert response.status_code == 200, response.text
        pngs = [base64.b64decode(item) for item in response.json()["outputs"][0]["data"]]
        for png, name in zip(pngs, ("sandal", "ankle boot"), strict=True):
            v1 = await http.post(f"/v1/models/{MODEL}/generate", json={"seed": 7, "class": name})
            assert v1.status_code == 200 and v1.content == png
        # Without a class a seed means its own class, seed % 10, as in v1.
        alone = await http.post(
            INFER, json={"inputs": [seed_tensor(7)], "outputs": [{"name": "png"}]}
        )
        v1_default = await http.post(f"/v1/models/{MODEL}/generate", json={"seed": 7})
        assert base64.b64decode(alone.json()["outputs"][0]["data"][0]) == v1_default.content


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ([{"name": "latent", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}], "needs"),
        ([seed_tensor(1), class_tensor(10)], "not one of"),
        ([seed_tensor(1, 2), class_tensor(3)], "shape [2]"),
        (
            [seed_tensor(1), {"name": "class", "shape": [1], "datatype": "FP32", "data": [1.0]}],
            "INT64",
        ),
    ],
)
async def test_bad_class_input_is_a_400_naming_the_problem(
    inputs: list[dict[str, object]], words: str
) -> None:
    async with serve_in_process(Settings(models_dir=MODELS, grpc_port=0)) as http:
        response = await http.post(INFER, json={"inputs": inputs})
        assert response.status_code == 400, response.text
        assert words in response.json()["error"]
