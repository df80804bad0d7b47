"""The models this repository ships: each one verifies, serves, and carries its quality report.

These guard the README's serve command: `imagegen serve` refuses to start on a broken
model, so a bad export or a hand-edited card must fail here first.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.runtime.card import ModelCard, class_weights, latent_for_seed, sha256_file, to_uint8
from service.settings import Settings
from tests.service.conftest import serve_in_process

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED = sorted(p.parent.name for p in MODELS_DIR.glob("*/model.json"))


def test_the_models_named_in_the_docs_are_shipped() -> None:
    expected = {
        "fashion-gan",
        "fashion-vae",
        "mnist-gan",
        "mnist-vae",
        "fashion-cgan",
        "mnist-cgan",
    }
    assert expected <= set(SHIPPED), f"missing: {expected - set(SHIPPED)}"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_matches_the_file_and_records_how_the_model_was_made(name: str) -> None:
    folder = MODELS_DIR / name
    card = ModelCard.load(folder / "model.json")
    assert card.name == name
    assert card.onnx.sha256 == sha256_file(folder / "model.onnx")
    assert (folder / "model.onnx").stat().st_size < 8 * 2**20, "keep shipped models small"
    assert card.dataset["train_size"] > 0 and card.training["epochs"] > 0
    assert card.training["steps"] > 0 and card.training["code_revision"]
    parity = card.metrics["parity"]
    assert parity["max_abs_diff_batch_1"] <= 1e-4 and parity["max_abs_diff_batch_64"] <= 1e-4
    quality = card.metrics["quality"]
    assert quality["num_samples"] == 10000 and quality["reference_ok"]
    assert set(quality["reference"]) == {
        "real_train_vs_test",
        "blur_sigma_0.5",
        "blur_sigma_1",
        "three_classes_removed",
    }
    assert Image.open(folder / "samples.png").format == "PNG"


@pytest.mark.parametrize("name", SHIPPED)
async def test_the_service_serves_it_and_returns_the_seed_contract_image(name: str) -> None:
    card = ModelCard.load(MODELS_DIR / name / "model.json")
    settings = Settings(models_dir=MODELS_DIR, max_batch_delay_ms=1)
    async with serve_in_process(settings) as http:
        assert (await http.get("/readyz")).status_code == 200
        response = await http.post(f"/v1/models/{name}/generate", json={"seed": 1})
        assert response.status_code == 200
        pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(MODELS_DIR / name / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feed = {card.input_name: latent_for_seed(1, card.latent_dim)[None]}
    if card.conditioning is not None:  # seed 1 without a class means class 1 % num_classes
        feed[card.conditioning.input_name] = class_weights(np.array([1]), card.num_classes)
    (out,) = session.run(None, feed)
    expected = to_uint8(out, card.image.output_range)[0, ..., 0]
    assert pixels.shape == (card.image.height, card.image.width)
    np.testing.assert_array_equal(pixels, expected)
    assert 10 < float(pixels.mean()) < 245, "a trained generator draws something, not a blank"


async def test_the_model_list_shows_each_models_headline_quality() -> None:
    async with serve_in_process(Settings(models_dir=MODELS_DIR)) as http:
        listed = {m["name"]: m for m in (await http.get("/v1/models")).json()["models"]}
    for name in SHIPPED:
        quality = ModelCard.load(MODELS_DIR / name / "model.json").metrics["quality"]["generated"]
        assert listed[name]["metrics"] == {
            key: quality[key] for key in ("frechet_distance", "precision", "recall")
        }


CONDITIONAL = [
    name for name in SHIPPED if ModelCard.load(MODELS_DIR / name / "model.json").conditioning
]


def test_the_class_conditional_models_are_shipped() -> None:
    assert "fashion-cgan" in CONDITIONAL


@pytest.mark.parametrize("name", CONDITIONAL)
def test_a_conditional_card_names_its_classes_and_measures_class_fidelity(name: str) -> None:
    card = ModelCard.load(MODELS_DIR / name / "model.json")
    assert card.conditioning is not None
    assert card.conditioning.classes == card.dataset["classes"]
    quality = card.metrics["quality"]
    fidelity = quality["generated"]["class_fidelity"]
    assert list(fidelity["per_class"]) == card.conditioning.classes
    assert fidelity["mean"] == pytest.approx(
        np.mean(list(fidelity["per_class"].values())), abs=1e-3
    )
    # Classes uniform over the 10,000 samples; the histogram is of what the classifier saw.
    assert "classes uniform" in quality["latents"]
    assert quality["classifier"]["test_accuracy"] > 0.8
    # One row per class in the sample grid.
    with Image.open(MODELS_DIR / name / "samples.png") as grid:
        assert grid.size[1] == card.num_classes * card.image.height * 2


@pytest.mark.parametrize("name", CONDITIONAL)
async def test_each_class_is_served_and_differs(name: str) -> None:
    card = ModelCard.load(MODELS_DIR / name / "model.json")
    assert card.conditioning is not None
    settings = Settings(models_dir=MODELS_DIR, max_batch_delay_ms=1)
    async with serve_in_process(settings) as http:
        info = (await http.get(f"/v1/models/{name}")).json()
        assert info["classes"] == card.conditioning.classes
        pngs = set()
        for index, class_name in enumerate(card.conditioning.classes):
            response = await http.post(
                f"/v1/models/{name}/generate", json={"seed": 3, "class": class_name.upper()}
            )
            assert response.status_code == 200 and response.headers["x-class"] == class_name
            by_index = await http.get(f"/v1/models/{name}/images/3.png?class={index}")
            assert by_index.content == response.content
            pngs.add(response.content)
        assert len(pngs) == card.num_classes  # every class draws something else
