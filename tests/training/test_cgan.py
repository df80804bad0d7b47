"""The class-conditional GAN on tiny data: it trains on (image, class) pairs, resumes exactly,
exports a two-input ONNX generator within parity, with a card the service loads and serves,
and the evaluator measures its class fidelity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.train
tf = pytest.importorskip("tensorflow")

from service.runtime.card import class_weights, latent_for_seed  # noqa: E402
from training.train import Run, TrainConfig, make_strategy, train  # noqa: E402


def tiny_config(data_dir: Path, **overrides: Any) -> TrainConfig:
    options: dict[str, Any] = {
        "kind": "cgan",
        "data_dir": str(data_dir),
        "epochs": 1,
        "batch_size": 32,
        "steps_per_epoch": 3,
        "eval_every": 0,
        "model_options": {"generator_width": 16, "discriminator_width": 8},
    }
    return TrainConfig(**{**options, **overrides})


def test_cgan_trains_resumes_and_exports_a_servable_conditional_model(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from service.runtime.providers import plan_providers
    from service.runtime.registry import load_model
    from training.data import FASHION_CLASSES
    from training.export import export_run

    run_dir = tmp_path / "run"
    run = train(tiny_config(tiny_idx_dir, eval_every=1, eval_samples=40), run_dir, progress=False)
    assert run.model.num_classes == 10
    assert np.isfinite(run.history[0]["val_frechet_distance"])
    generator = run.model.generator
    assert [tuple(i.shape) for i in generator.inputs] == [(None, 64), (None, 10)]

    # Exact resume: a fresh run object restores every variable, discriminator included.
    fresh = Run(run_dir, tiny_config(tiny_idx_dir, seed=1), make_strategy("default"))
    fresh.restore()
    for a, b in zip(
        run.model.discriminator.weights, fresh.model.discriminator.weights, strict=True
    ):
        np.testing.assert_array_equal(np.array(a), np.array(b))

    resumed = train(tiny_config(tiny_idx_dir, epochs=2), run_dir, resume=True, progress=False)
    assert int(resumed.model.g_optimizer.iterations.numpy()) == 6

    card = export_run(run_dir, tmp_path / "tiny-cgan", name="tiny-cgan", evaluate=False)
    assert card.kind == "gan"
    assert card.conditioning is not None
    assert card.conditioning.input_name == "class_weights"
    assert card.conditioning.classes == list(FASHION_CLASSES)
    parity = card.metrics["parity"]
    assert parity["max_abs_diff_batch_1"] <= 1e-4 and parity["max_abs_diff_batch_64"] <= 1e-4
    saved = json.loads((tmp_path / "tiny-cgan" / "model.json").read_text())
    assert saved["conditioning"]["classes"][9] == "Ankle boot"

    # The ONNX file is the served network: latent and class weights in, the class matters.
    session = ort.InferenceSession(str(tmp_path / "tiny-cgan" / "model.onnx"))
    latents = np.stack([latent_for_seed(s, 64) for s in range(4)])
    as_class = [
        session.run(None, {"latent": latents, "class_weights": class_weights(np.full(4, c), 10)})[0]
        for c in (0, 7)
    ]
    assert np.abs(as_class[0] - as_class[1]).max() > 1e-3
    blend = (0.5 * class_weights(np.zeros(4), 10) + 0.5 * class_weights(np.full(4, 7), 10)).astype(
        np.float32
    )
    resumed.model.prepare_served()
    (mixed,) = session.run(None, {"latent": latents, "class_weights": blend})
    np.testing.assert_allclose(
        mixed, np.asarray(resumed.model.served([latents, blend], training=False)), atol=1e-4
    )

    # The service loads it (its class input checked against the card) and serves classes.
    loaded = load_model(tmp_path / "tiny-cgan", plan_providers("cpu"), max_batch_size=4)
    images = loaded.generator.generate(latents, class_weights(np.arange(4), 10))
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8

    # The sample grid has one row per class (10 rows of 8 at scale 2).
    from PIL import Image

    with Image.open(tmp_path / "tiny-cgan" / "samples.png") as grid:
        assert grid.size == (8 * 28 * 2, 10 * 28 * 2)


def test_class_fidelity_is_the_share_labelled_as_asked() -> None:
    from training.evaluate import class_fidelity

    intended = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 0, 2])
    report = class_fidelity(predicted, intended, ["a", "b", "c"])
    assert report["per_class"] == {"a": 0.75, "b": 1.0, "c": 0.5}
    assert report["mean"] == pytest.approx((0.75 + 1.0 + 0.5) / 3, abs=1e-4)
    assert report["min"] == 0.5 and report["min_class"] == "c"


def test_the_fidelity_reference_is_the_classifier_on_labelled_real_images() -> None:
    from types import SimpleNamespace

    from training.evaluate import real_class_fidelity

    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    real = SimpleNamespace(
        dataset=SimpleNamespace(test_labels=labels, class_names=("a", "b", "c")),
        test_predictions=predicted,
    )
    reference = real_class_fidelity(real)  # type: ignore[arg-type]
    assert reference["per_class"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    assert reference["min"] == 0.5 and reference["min_class"] == "a"
