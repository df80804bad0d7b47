"""The training loop in-process on tiny data: exact resume, strict restore, EMA BatchNorm
statistics, quality tracked during training and best-checkpoint export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.train
tf = pytest.importorskip("tensorflow")

from training.train import (  # noqa: E402
    CheckpointMismatchError,
    Run,
    TrainConfig,
    make_strategy,
    train,
)


def tiny_config(data_dir: Path, kind: str = "gan", **overrides: Any) -> TrainConfig:
    options: dict[str, Any] = {
        "kind": kind,
        "data_dir": str(data_dir),
        "epochs": 1,
        "batch_size": 32,
        "steps_per_epoch": 3,
        "eval_every": 0,
    }
    if kind == "gan":
        options["model_options"] = {"generator_width": 16, "discriminator_width": 8}
    return TrainConfig(**{**options, **overrides})


def saved_state(run: Run) -> dict[str, list[np.ndarray]]:
    """Every variable the checkpoint covers, by object, as numpy copies."""
    model = run.model
    return {
        "generator": [np.array(w) for w in model.generator.weights],
        "ema_generator": [np.array(w) for w in model.ema_generator.weights],
        "discriminator": [np.array(w) for w in model.discriminator.weights],
        "g_optimizer": [np.array(v) for v in model.g_optimizer.variables],
        "d_optimizer": [np.array(v) for v in model.d_optimizer.variables],
        "epoch": [np.array(run.epoch)],
    }


def test_a_resumed_gan_restores_every_object_exactly(tiny_idx_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trained = train(tiny_config(tiny_idx_dir), run_dir, progress=False)
    saved = saved_state(trained)
    assert int(trained.model.g_optimizer.iterations.numpy()) == 3

    # A fresh run object starts from other weights (another seed) and zeroed optimisers...
    fresh = Run(run_dir, tiny_config(tiny_idx_dir, seed=1), make_strategy("default"))
    before = saved_state(fresh)
    for name in ("generator", "ema_generator", "discriminator", "g_optimizer", "d_optimizer"):
        assert any(
            not np.array_equal(a, b) for a, b in zip(before[name], saved[name], strict=True)
        ), name
    # ... and a restore brings back every variable bit for bit, the step counters included.
    assert fresh.restore() == 1
    after = saved_state(fresh)
    for name, values in saved.items():
        assert len(after[name]) == len(values) > 0, name
        for got, want in zip(after[name], values, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert int(fresh.model.g_optimizer.iterations.numpy()) == 3
    assert int(fresh.model.d_optimizer.iterations.numpy()) == 3

    # Resuming goes on from there: the step counters continue, not restart.
    resumed = train(tiny_config(tiny_idx_dir, epochs=2), run_dir, resume=True, progress=False)
    assert int(resumed.model.g_optimizer.iterations.numpy()) == 6
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_a_checkpoint_missing_an_object_is_an_error(tiny_idx_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = Run(run_dir, tiny_config(tiny_idx_dir), make_strategy("default"))
    # A checkpoint written without the discriminator and its optimiser.
    partial = tf.train.Checkpoint(
        epoch=run.epoch,
        generator=run.model.generator,
        ema_generator=run.model.ema_generator,
        g_optimizer=run.model.g_optimizer,
    )
    tf.train.CheckpointManager(partial, run_dir / "ckpt", max_to_keep=1).save(checkpoint_number=1)
    with pytest.raises(CheckpointMismatchError, match="does not hold every object"):
        Run(run_dir, tiny_config(tiny_idx_dir), make_strategy("default")).restore()


# --- EMA BatchNorm statistics -------------------------------------------------------------


def test_recomputed_batchnorm_statistics_match_the_batch_statistics_of_ema_outputs() -> None:
    from training.batchnorm import (
        batchnorm_layers,
        batchnorm_statistics_kept,
        recompute_batchnorm_statistics,
    )
    from training.gan import GAN

    gan = GAN(8, generator_width=16, discriminator_width=8)
    network = gan.ema_generator
    latents = np.random.default_rng(0).standard_normal((1024, 8), dtype=np.float32)

    def inference_vs_batch_statistics() -> float:
        with batchnorm_statistics_kept(network):  # a training-mode call moves the statistics
            batch = np.asarray(network(latents, training=True))
        return float(np.abs(np.asarray(network(latents, training=False)) - batch).max())

    assert inference_vs_batch_statistics() > 1e-2  # the initial statistics (0, 1) are wrong
    assert recompute_batchnorm_statistics(network, latents) == len(batchnorm_layers(network)) == 3
    # Inference mode now normalises as one batch of all the latents does (to float32
    # rounding: TensorFlow's batch moments are float32 sums over 1024 x 7 x 7 values).
    assert inference_vs_batch_statistics() < 5e-4
    # And each layer holds the batch mean and (biased) variance of its own input.
    first = batchnorm_layers(network)[0]
    inputs = np.asarray(keras_model(network, first.input)(latents, training=False))
    np.testing.assert_allclose(np.array(first.moving_mean), inputs.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.array(first.moving_variance), inputs.var(axis=0), rtol=1e-4)


def keras_model(network: Any, output: Any) -> Any:
    import keras

    return keras.Model(network.input, output)


def test_prepare_served_recomputes_only_the_ema_statistics() -> None:
    from training.gan import GAN

    gan = GAN(8, generator_width=16, discriminator_width=8)
    live_before = [np.array(w) for w in gan.generator.weights]
    ema_before = [np.array(w) for w in gan.ema_generator.weights]
    assert "copied" in gan.prepare_served("copied")
    assert all(
        np.array_equal(a, np.array(b))
        for a, b in zip(ema_before, gan.ema_generator.weights, strict=True)
    )
    assert "recomputed" in gan.prepare_served()
    changed = [
        not np.array_equal(a, np.array(b))
        for a, b in zip(ema_before, gan.ema_generator.weights, strict=True)
    ]
    assert sum(changed) == 6  # moving mean and variance of the three BatchNorm layers
    for a, b in zip(live_before, gan.generator.weights, strict=True):
        np.testing.assert_array_equal(a, np.array(b))


# --- quality during training --------------------------------------------------------------


def test_training_scores_the_served_network_on_the_validation_split(
    tiny_idx_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    caplog.set_level("INFO", logger="training.train")
    run = train(tiny_config(tiny_idx_dir, eval_every=1, eval_samples=64), run_dir, progress=False)
    (entry,) = run.history
    for key in ("frechet_distance", "precision", "recall", "coverage"):
        assert np.isfinite(entry[f"val_{key}"]), key
    assert entry["val_frechet_distance"] > 0
    best = json.loads((run_dir / "best.json").read_text())
    assert best["epoch"] == 1 and best["frechet_distance"] == entry["val_frechet_distance"]
    assert (run_dir / "ckpt_best" / "checkpoint").is_file()
    # 256 train images: a tenth held out for validation, the rest trained on.
    assert "(231 images, 25 held out for validation)" in caplog.text
    assert "validation after epoch 1 (64 samples vs 25 held-out images): FD" in caplog.text
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    assert "validation/frechet_distance" in events.Tags()["tensors"]


def test_a_resumed_run_is_watched_as_asked_but_keeps_its_recipe(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(tiny_idx_dir, eval_every=0), run_dir, progress=False)
    # Resumed with another learning rate (ignored: the recipe stays) and validation asked for
    # (taken, since the caller says it gave it), then once more without saying so (kept).
    asked = tiny_config(tiny_idx_dir, epochs=2, eval_every=1, eval_samples=32, learning_rate=0.1)
    resumed = train(
        asked, run_dir, resume=True, progress=False, given={"eval_every", "eval_samples"}
    )
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["eval_every"] == 1 and saved["eval_samples"] == 32
    assert saved["learning_rate"] is None  # the run's own (the kind's default)
    assert "val_frechet_distance" not in resumed.history[0]
    assert np.isfinite(resumed.history[1]["val_frechet_distance"])
    train(tiny_config(tiny_idx_dir, epochs=3, eval_every=0), run_dir, resume=True, progress=False)
    assert json.loads((run_dir / "config.json").read_text())["eval_every"] == 1


def test_the_best_checkpoint_is_kept_and_exported_by_default(
    tiny_idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.runtime.card import latent_for_seed
    from training import evaluate
    from training.export import export_run
    from training.train import open_run

    scripted_fd = iter([5.0, 3.0, 4.0])  # epoch 2 is the best

    def fake_call(self: Any, images: np.ndarray) -> dict[str, float]:
        return {"frechet_distance": next(scripted_fd), "precision": 0.5, "recall": 0.5,
                "coverage": 0.5}  # fmt: skip

    monkeypatch.setattr(evaluate.ValidationScorer, "__call__", fake_call)
    run_dir = tmp_path / "run"
    train(tiny_config(tiny_idx_dir, epochs=3, eval_every=1, eval_samples=16), run_dir,
          progress=False)  # fmt: skip
    assert json.loads((run_dir / "best.json").read_text())["epoch"] == 2

    card = export_run(run_dir, tmp_path / "best", name="tiny", evaluate=False)
    assert card.training["epochs"] == 2
    assert card.training["checkpoint"]["selected"] == "best"
    assert card.training["checkpoint"]["epoch"] == 2
    assert card.training["checkpoint"]["run_epochs"] == 3
    assert card.training["checkpoint"]["validation"]["frechet_distance"] == 3.0
    assert "recomputed" in card.training["served_network"]
    # The ONNX file is the epoch-2 EMA generator with its statistics recomputed.
    best_run = open_run(run_dir, checkpoint="best")
    best_run.model.prepare_served()
    import onnxruntime as ort

    latents = np.stack([latent_for_seed(s, best_run.model.latent_dim) for s in range(4)])
    session = ort.InferenceSession(str(tmp_path / "best" / "model.onnx"))
    (onnx_out,) = session.run(None, {"latent": latents})
    expected = np.asarray(best_run.model.served(latents, training=False))
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4)

    last = export_run(run_dir, tmp_path / "last", name="tiny", evaluate=False, checkpoint="last")
    assert last.training["epochs"] == 3 and last.training["checkpoint"]["selected"] == "last"


def test_a_vae_trained_on_logits_exports_its_sigmoid_within_parity(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from service.runtime.card import latent_for_seed
    from training.export import export_run

    run_dir = tmp_path / "vae"
    run = train(tiny_config(tiny_idx_dir, kind="vae"), run_dir, progress=False)
    assert np.isfinite(run.history[0]["reconstruction"])
    card = export_run(run_dir, tmp_path / "model", name="tiny-vae", evaluate=False)
    parity = card.metrics["parity"]
    assert parity["max_abs_diff_batch_1"] <= 1e-4 and parity["max_abs_diff_batch_64"] <= 1e-4
    assert card.image.output_range == (0.0, 1.0)
    latents = np.stack([latent_for_seed(s, card.latent_dim) for s in range(8)]) * 5.0
    session = ort.InferenceSession(str(tmp_path / "model" / "model.onnx"))
    (images,) = session.run(None, {"latent": latents})
    assert images.min() >= 0.0 and images.max() <= 1.0  # the sigmoid is in the graph
    logits = np.asarray(run.model.decoder_logits(latents))
    np.testing.assert_allclose(images, 1.0 / (1.0 + np.exp(-logits)), atol=1e-4)


def test_ema_ablation_adds_the_batchnorm_row_to_the_card_and_the_report(
    tiny_idx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from service.runtime.card import ModelCard
    from training.export import export_run
    from training.report import write_quality_doc

    run_dir = tmp_path / "run"
    train(tiny_config(tiny_idx_dir, steps_per_epoch=5), run_dir, progress=False)
    models = tmp_path / "models"
    monkeypatch.setenv("IMAGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    export_run(run_dir, models / "tiny-gan", name="tiny-gan", eval_samples=200)
    env = {"IMAGEGEN_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "training.ablation", str(run_dir), str(models / "tiny-gan"),
         "--num-samples", "200"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**__import__("os").environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ablation = ModelCard.load(models / "tiny-gan" / "model.json").metrics["ema_ablation"]
    assert set(ablation) >= {"ema", "ema_copied_bn", "raw"}
    assert "recomputed" in ablation["ema_sampler"] and "copied" in ablation["ema_copied_bn_sampler"]
    # Same weights, other BatchNorm statistics: the scores differ.
    assert ablation["ema"]["frechet_distance"] != ablation["ema_copied_bn"]["frechet_distance"]
    doc = write_quality_doc(models, tmp_path / "docs" / "quality.md")
    assert "EMA generator, BatchNorm statistics recomputed (served)" in doc
    assert "EMA generator, BatchNorm statistics copied from the live generator" in doc
