"""The GAN recipe knobs (training/recipes.py, training/augment.py, training/gan.py) and the
equal-time comparison harness (training/compare.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.train
tf = pytest.importorskip("tensorflow")

from training import compare  # noqa: E402
from training.augment import cutout, diff_augment, parse_policy, translation  # noqa: E402
from training.cgan import CGAN  # noqa: E402
from training.gan import GAN  # noqa: E402
from training.recipes import RECIPES, get_recipe  # noqa: E402
from training.train import TrainConfig, load_config, train  # noqa: E402

TINY = {"generator_width": 16, "discriminator_width": 8}


def tiny_gan(recipe: str = "dcgan", cls: type[GAN] = GAN, **options: Any) -> GAN:
    extra = {"num_classes": 10} if cls is CGAN else {}
    return cls(16, **{**get_recipe(recipe).model_options, **TINY, **options, **extra})


def batch_for(model: GAN, n: int = 8) -> Any:
    images = tf.random.stateless_uniform((n, 28, 28, 1), seed=(1, 2), minval=-1, maxval=1)
    if isinstance(model, CGAN):
        return images, tf.one_hot(tf.range(n) % 10, 10)
    return images


@pytest.mark.parametrize(
    ("recipe", "cls"),
    [
        pytest.param(name, cls, id=f"{name}-{cls.kind}")
        for name in sorted(RECIPES)
        for cls in (GAN, CGAN)
        if cls is CGAN or not RECIPES[name].conditional_only
    ],
)
def test_every_recipe_trains_the_gans_it_is_for_with_finite_losses(
    recipe: str, cls: type[GAN]
) -> None:
    model = tiny_gan(recipe, cls)
    step = tf.function(model.train_step)
    before = [np.array(w) for w in model.discriminator.trainable_weights]
    for _ in range(2):
        out = step(batch_for(model))
        model.after_step()
    assert all(np.isfinite(float(v)) for v in out.values())
    after = model.discriminator.trainable_weights
    assert any(not np.array_equal(b, np.array(a)) for b, a in zip(before, after, strict=True))
    for key, value in get_recipe(recipe).model_options.items():
        assert model.hyperparameters[key] == TINY.get(key, value)


def test_the_auxiliary_classifier_learns_classes_from_real_images_only() -> None:
    model = tiny_gan("batch32-ac", CGAN)
    discriminator = model.discriminator
    assert [tuple(o.shape) for o in discriminator.outputs] == [(None, 1), (None, 10)]
    assert model.hyperparameters["class_loss_weight"] == 0.1
    images, classes = batch_for(model)
    step = tf.function(model.train_step)
    out = step((images, classes))
    assert {"d_class", "g_class"} <= set(out) and np.isfinite(float(out["d_class"]))
    # The discriminator's classifier is trained on real images: a few steps on one fixed
    # batch lower its cross-entropy there.
    first = float(out["d_class"])
    for _ in range(30):
        out = step((images, classes))
    assert float(out["d_class"]) < first
    # ... and its logits now name the batch's classes (inference mode, no dropout).
    _, class_logits = discriminator([images, classes], training=False)
    right = np.argmax(np.array(class_logits), axis=1) == np.argmax(np.array(classes), axis=1)
    assert right.mean() > 0.5
    # Without the weight there is no class head and no class loss.
    plain = tiny_gan("batch32", CGAN)
    assert len(plain.discriminator.outputs) == 1
    assert "d_class" not in tf.function(plain.train_step)(batch_for(plain))
    with pytest.raises(ValueError, match="must be >= 0"):
        tiny_gan("batch32", CGAN, class_loss_weight=-1.0)


def test_the_recipes_change_the_networks_they_say() -> None:
    shipped = tiny_gan("dcgan").discriminator
    layer_types = {type(layer).__name__ for layer in shipped.layers}
    assert "Dropout" in layer_types and "SpectralNormalization" not in layer_types

    normalised = tiny_gan("sn-d")
    types = [type(layer).__name__ for layer in normalised.discriminator.layers]
    assert types.count("SpectralNormalization") == 3  # two convolutions and the logit
    assert "Dropout" not in types
    assert normalised.real_label == 1.0

    deep = tiny_gan("deep-d").discriminator
    convs = [w for w in deep.trainable_weights if len(w.shape) == 4]
    assert [int(w.shape[-1]) for w in convs] == [8, 16, 32]
    wide = GAN(16, **{**TINY, **get_recipe("wide-d").model_options}).discriminator
    assert [int(w.shape[-1]) for w in wide.trainable_weights if len(w.shape) == 4] == [128, 256]

    ttur = tiny_gan("ttur")
    assert float(ttur.d_optimizer.learning_rate) == pytest.approx(4e-4)
    assert float(ttur.g_optimizer.learning_rate) == pytest.approx(2e-4)
    assert get_recipe("batch64").batch_size == 64


def test_r1_is_the_squared_input_gradient_and_applies_only_every_n_steps() -> None:
    model = tiny_gan("dcgan", r1_gamma=2.0, r1_every=3, dropout=0.0)
    images = batch_for(model)
    # What the step's penalty should be, from the discriminator before the step.
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(model.discriminator(images, training=True))
    grads = tape.gradient(total, images)
    expected = 0.5 * 2.0 * 3 * float(tf.reduce_mean(tf.reduce_sum(grads**2, axis=[1, 2, 3])))
    step = tf.function(model.train_step)
    penalties = [float(step(images)["r1"]) for _ in range(4)]
    assert penalties[0] == pytest.approx(expected, rel=1e-4)
    assert penalties[1] == penalties[2] == 0.0  # steps 1 and 2: not due
    assert penalties[3] > 0.0  # step 3: due again


def test_translation_shifts_whole_images_and_fills_with_background() -> None:
    image = np.full((1, 28, 28, 1), -1.0, np.float32)
    image[0, 10:14, 12:16] = 1.0  # a 4x4 white square
    shifted = translation(tf.constant(image), tf.constant([5, 6]), ratio=0.125).numpy()
    # Every image moves as a whole: the square survives, shifted by at most 4 pixels.
    rows, cols = np.nonzero(shifted[0, ..., 0] > 0)
    assert len(rows) == 16
    assert abs(int(rows.min()) - 10) <= 4 and abs(int(cols.min()) - 12) <= 4
    assert set(np.unique(shifted)) <= {-1.0, 1.0}
    # Over many draws every shift in [-4, 4] appears; the same seed draws the same.
    many = translation(tf.constant(np.repeat(image, 200, 0)), tf.constant([1, 2])).numpy()
    tops = {int(np.nonzero(m[..., 0] > 0)[0].min()) - 10 for m in many}
    assert tops <= set(range(-4, 5)) and len(tops) >= 7
    again = translation(tf.constant(np.repeat(image, 200, 0)), tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(many, again)


def test_cutout_blanks_one_square_per_image_and_lets_gradients_through() -> None:
    images = tf.ones((64, 28, 28, 1))
    out = cutout(images, tf.constant([3, 4])).numpy()
    blanked = (out == 0).sum(axis=(1, 2, 3))
    assert blanked.max() == 14 * 14 and blanked.min() > 0  # clipped at the edges
    for image in out:
        rows, cols = np.nonzero(image[..., 0] == 0)
        # One axis-aligned rectangle: every pixel of its bounding box is blanked.
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(
            diff_augment(images, parse_policy("translation,cutout"), tf.constant([1, 2]))
        )
    assert tape.gradient(total, images) is not None


def test_unknown_policies_and_recipes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="translation, cutout"):
        parse_policy("translation,colour")
    with pytest.raises(ValueError, match="known: dcgan"):
        get_recipe("stylegan")
    with pytest.raises(ValueError, match="r1_every"):
        GAN(16, r1_every=0)


def test_the_train_cli_rejects_an_unknown_recipe_and_a_recipe_for_a_vae(tmp_path: Path) -> None:
    for args, message in (
        (["gan", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["vae", "--recipe", "ttur"], "a VAE has none"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "training.cli", "train", *args, "--run-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


def test_a_time_budget_stops_the_run_scores_it_and_a_resume_keeps_its_recipe(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        kind="gan",
        data_dir=str(tiny_idx_dir),
        epochs=50,
        batch_size=32,
        steps_per_epoch=2,
        recipe="ttur",
        model_options=TINY,
        eval_every=100,  # only the last epoch is scored
        eval_samples=40,
        max_minutes=0.0001,
    )
    run_dir = tmp_path / "run"
    run = train(config, run_dir, progress=False)
    assert len(run.history) == 1  # the first epoch already passed the budget
    assert "val_frechet_distance" in run.history[0]  # the last epoch is scored
    assert run.history[0]["cpu_seconds"] > 0
    assert float(run.model.d_optimizer.learning_rate) == pytest.approx(4e-4)

    # A resume with a larger budget goes on, with the recipe the run was started with.
    more = TrainConfig(kind="gan", data_dir=str(tiny_idx_dir), epochs=3, max_minutes=60)
    resumed = train(more, run_dir, resume=True, progress=False, given={"max_minutes"})
    assert len(resumed.history) == 3
    saved = load_config(run_dir)
    assert saved.recipe == "ttur" and saved.max_minutes == 60
    assert float(resumed.model.d_optimizer.learning_rate) == pytest.approx(4e-4)

    # Counted in CPU time, the budget the run has already spent stops it after one epoch.
    spent = resumed.cpu_seconds / 60
    assert 0 < spent <= resumed.seconds / 60 * 2.5  # TensorFlow's threads may add up
    cpu = TrainConfig(
        kind="gan", data_dir=str(tiny_idx_dir), epochs=10, max_minutes=spent, budget_clock="cpu"
    )
    given = {"max_minutes", "budget_clock"}
    again = train(cpu, run_dir, resume=True, progress=False, given=given)
    assert len(again.history) == 4 and load_config(run_dir).budget_clock == "cpu"


def test_a_learning_rate_decay_falls_linearly_to_zero_and_a_resume_keeps_its_window(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    # The schedule itself: constant, then linear, then zero.
    model = tiny_gan("ttur", lr_decay_start=2, lr_decay_end=6)
    rates = [float(model.d_optimizer.learning_rate)]
    step = tf.function(model.train_step)
    for _ in range(7):
        step(batch_for(model))
        rates.append(float(model.d_optimizer.learning_rate))
    assert rates == pytest.approx([4e-4, 4e-4, 4e-4, 3e-4, 2e-4, 1e-4, 0.0, 0.0])
    assert model.hyperparameters["lr_decay"] == "linear to 0 from step 2 to 6"
    with pytest.raises(ValueError, match="decay must start"):
        tiny_gan(lr_decay_start=5, lr_decay_end=5)

    # A run fixes its window in steps when it starts: the last 2 of 4 epochs of 2 steps.
    config = TrainConfig(
        kind="gan",
        data_dir=str(tiny_idx_dir),
        epochs=4,
        batch_size=32,
        steps_per_epoch=2,
        model_options=TINY,
        eval_every=0,
        hold_out_validation=False,
        lr_decay_epochs=2,
    )
    run_dir = tmp_path / "run"
    first = train(dataclasses.replace(config, max_minutes=1e-6), run_dir, progress=False)
    window = {"lr_decay_start": 4, "lr_decay_end": 8}
    assert load_config(run_dir).model_options == {**TINY, **window}
    assert float(first.model.g_optimizer.learning_rate) == pytest.approx(2e-4)  # step 2
    given = {"max_minutes"}
    for epochs, rate in ((3, 1e-4), (5, 0.0)):  # steps 6 and 10, the window unchanged
        more = dataclasses.replace(config, epochs=epochs, max_minutes=None)
        resumed = train(more, run_dir, resume=True, progress=False, given=given)
        assert int(resumed.model.g_optimizer.iterations) == 2 * epochs
        assert float(resumed.model.g_optimizer.learning_rate) == pytest.approx(rate)
        assert load_config(run_dir).model_options == {**TINY, **window}
    assert load_config(run_dir).earlier_lr_decay_windows == []

    # A resume that names a decay again sets a new window over the new epochs (a warm
    # restart: the rates go back up), records the old one, and a later resume keeps it.
    restart = dataclasses.replace(config, epochs=8, max_minutes=1e-6)
    given = {"max_minutes", "lr_decay_epochs"}
    resumed = train(restart, run_dir, resume=True, progress=False, given=given)
    assert int(resumed.model.g_optimizer.iterations) == 12  # one epoch more: the budget
    assert float(resumed.model.g_optimizer.learning_rate) == pytest.approx(2e-4)
    saved = load_config(run_dir)
    assert saved.model_options == {**TINY, "lr_decay_start": 12, "lr_decay_end": 16}
    assert saved.earlier_lr_decay_windows == [window]
    resumed = train(restart, run_dir, resume=True, progress=False, given={"max_minutes"})
    assert int(resumed.model.g_optimizer.iterations) == 14
    assert float(resumed.model.g_optimizer.learning_rate) == pytest.approx(1e-4)
    assert load_config(run_dir).earlier_lr_decay_windows == [window]


def test_a_decay_or_recipe_the_run_cannot_take_is_refused(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    for kind, epochs, decay, recipe, message in (
        ("vae", 3, 1, None, "is for the GANs"),
        ("gan", 3, 4, None, "between 1 and --epochs"),
        ("gan", 3, 0, "batch32-ac", "for the conditional GAN"),
    ):
        config = TrainConfig(
            kind=kind,  # type: ignore[arg-type]
            data_dir=str(tiny_idx_dir),
            epochs=epochs,
            batch_size=32,
            steps_per_epoch=1,
            eval_every=0,
            hold_out_validation=False,
            lr_decay_epochs=decay,
            recipe=recipe,
        )
        with pytest.raises(ValueError, match=message):
            train(config, tmp_path / f"{kind}-{decay}-{recipe}", progress=False)


def fake_run(folder: Path, recipe: str, seed: int, fds: list[float], cpu: float = 60.0) -> None:
    """A run folder as `imagegen train` leaves it: config and per-epoch history."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"recipe": recipe, "seed": seed, "batch_size": 128})
    )
    history = [
        {
            "epoch": i + 1,
            "seconds": cpu * 1.5,
            "cpu_seconds": cpu,
            "steps": 100,
            "val_frechet_distance": fd,
            "val_precision": 0.5,
            "val_recall": 0.4,
            "val_coverage": 0.3,
        }
        for i, fd in enumerate(fds)
    ]
    (folder / "history.json").write_text(json.dumps(history))


def test_the_comparison_reads_curves_on_cpu_minutes_and_tables_equal_time(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    # 5 CPU minutes per scored epoch; the dcgan run is shorter, so the table stops at 10.
    fake_run(root / "mnist" / "dcgan-seed0", "dcgan", 0, [90.0, 60.0], cpu=300)
    fake_run(root / "mnist" / "ttur-seed0", "ttur", 0, [80.0, 50.0, 40.0], cpu=300)
    out = tmp_path / "docs"
    result = compare.collect(root, "mnist")
    curve = result["runs"][0]["curve"]
    assert [p["cpu_minutes"] for p in curve] == [5.0, 10.0]
    assert [p["wall_minutes"] for p in curve] == [7.5, 15.0]
    assert result["runs"][0]["steps_per_second"] == pytest.approx(100 / 300, abs=1e-3)
    table = compare.comparison_table(result)
    assert table[0].startswith(
        "| recipe | seed | steps per CPU s | FD at 5 min | FD at 10 min | last"
    )
    assert "| ttur | 0 | 0.33 | 80.0 | 50.0 | 300 | 40.0 |" in table[3]
    assert compare.at_minute(curve, 4.9) is None

    from typer.testing import CliRunner

    done = CliRunner().invoke(
        compare.app,
        ["report", "--dataset", "mnist", "--root", str(root), "--out-dir", str(out)],
    )
    assert done.exit_code == 0, done.output
    assert json.loads((out / "mnist.json").read_text()) == result
    assert (out / "mnist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_long_runs_curves_keep_their_points_and_decay_windows(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    run = tmp_path / "runs" / "long-run"
    fake_run(run, "batch32", 0, [90.0, 60.0, 40.0], cpu=120)
    config = json.loads((run / "config.json").read_text())
    config.update(
        model_options={"lr_decay_start": 200, "lr_decay_end": 300},
        earlier_lr_decay_windows=[{"lr_decay_start": 50, "lr_decay_end": 100}],
    )
    (run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "docs" / "model-1.2.0"  # a dot in the name is not a suffix
    done = CliRunner().invoke(compare.app, ["curves", str(run), "--out", str(out)])
    assert done.exit_code == 0, done.output
    saved = json.loads((tmp_path / "docs" / "model-1.2.0.json").read_text())
    (entry,) = saved["runs"]
    assert [p["steps"] for p in entry["curve"]] == [100, 200, 300]
    assert [p["frechet_distance"] for p in entry["curve"]] == [90.0, 60.0, 40.0]
    assert entry["lr_decay_windows"] == [
        {"lr_decay_start": 50, "lr_decay_end": 100},
        {"lr_decay_start": 200, "lr_decay_end": 300},
    ]
    assert (tmp_path / "docs" / "model-1.2.0.png").read_bytes()[:4] == b"\x89PNG"
    missing = CliRunner().invoke(compare.app, ["curves", str(tmp_path), "--out", str(out)])
    assert missing.exit_code == 2 and "no history.json" in missing.output


def test_the_comparison_schedules_short_epochs_for_small_data_sets(tmp_path: Path) -> None:
    args = compare.train_args("mnist", "batch64", 1, 10, 250, 3600, tmp_path)
    assert args[args.index("--steps-per-epoch") + 1] == "56"  # 3600 // 64: a whole epoch
    assert args[args.index("--eval-every") + 1] == "4"  # ~250 steps between scores
    assert args[args.index("--threads") + 1] == "1"
    assert args[args.index("--budget-clock") + 1] == "cpu"
    big = compare.train_args("fashion-mnist", "dcgan", 0, 10, 250, 55000, tmp_path)
    assert big[big.index("--steps-per-epoch") + 1] == "250"
    assert big[big.index("--eval-every") + 1] == "1"


def test_the_comparison_runs_recipes_side_by_side_for_the_same_budget(
    tiny_idx_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    args = ["run", "--dataset", "fashion-mnist", "--data-dir", str(tiny_idx_dir)]
    args += ["--recipes", "dcgan,sn-d", "--minutes", "0.01", "--eval-steps", "2"]
    args += ["--eval-samples", "40"]
    usable = sorted(os.sched_getaffinity(0))[:2]
    args += ["--root", str(root), "--parallel", "2", "--cores", ",".join(map(str, usable))]
    result = subprocess.run(
        [sys.executable, "-m", "training.compare", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for recipe in ("dcgan", "sn-d"):
        folder = root / "fashion-mnist" / f"{recipe}-seed0"
        assert f"{folder}: finished (exit status 0)" in result.stdout
        assert f"{folder}: started on core {usable[0]}" in result.stdout or (
            f"{folder}: started on core {usable[-1]}" in result.stdout
        )
        config = load_config(folder)
        assert config.recipe == recipe and config.threads == 1 and config.budget_clock == "cpu"
        assert "cannot limit TensorFlow" not in (folder / "train.log").read_text()
        assert compare.curve(folder)  # scored at the end of its budget
    again = subprocess.run(
        [sys.executable, "-m", "training.compare", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.stdout.count("already trained") == 2


def test_every_recipe_is_named_in_the_readme_and_the_cli_help() -> None:
    from typer.testing import CliRunner

    from training.cli import app

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for name in RECIPES:
        assert f"`{name}`" in readme or f"`--recipe {name}`" in readme, name
        assert name in result.output, name
