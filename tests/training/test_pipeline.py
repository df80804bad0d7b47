"""The training CLI end to end on tiny data: train, resume, mirror over 2 CPUs, export to ONNX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.runtime.card import ModelCard, latent_for_seed, sha256_file

pytestmark = pytest.mark.train
pytest.importorskip("tensorflow")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=cwd,
    )  # fmt: skip


def tiny_train(
    kind: str, run_dir: Path, data_dir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return cli(
        "train", kind, "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--epochs", "1",
        "--batch-size", "32", "--steps-per-epoch", "3", "--eval-samples", "200", "--no-progress",
        *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data_dir = _make_idx(root)
    run_dir = root / "run"
    result = tiny_train("gan", run_dir, data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, data_dir


def _make_idx(root: Path) -> Path:
    from tests.training.conftest import write_idx

    folder = root / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 128), ("t10k", 32)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def test_training_writes_checkpoint_history_samples_and_tensorboard(
    gan_run: tuple[Path, Path],
) -> None:
    run_dir, _ = gan_run
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert history[0]["steps"] == 3
    assert all(np.isfinite(history[0][k]) for k in ("d_loss", "g_loss"))
    assert (run_dir / "ckpt" / "checkpoint").is_file()
    assert (run_dir / "samples" / "epoch_001.png").is_file()
    assert any((run_dir / "tb").iterdir())


def test_a_second_run_into_the_same_folder_needs_resume(gan_run: tuple[Path, Path]) -> None:
    run_dir, data_dir = gan_run
    result = tiny_train("gan", run_dir, data_dir)
    assert result.returncode == 2
    assert "--resume" in result.stderr


def test_export_writes_a_parity_checked_onnx_model_and_a_valid_card(
    gan_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import onnxruntime as ort

    run_dir, _ = gan_run
    out = tmp_path / "tiny-gan"
    result = cli("export", str(run_dir), str(out), "--no-evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    card = ModelCard.load(out / "model.json")
    assert card.name == "tiny-gan" and card.kind == "gan"
    assert card.onnx.sha256 == sha256_file(out / "model.onnx")
    assert card.onnx.opset >= 13
    assert card.image.output_range == (-1.0, 1.0)
    assert card.training["epochs"] == 1 and card.training["steps"] == 3
    parity = card.metrics["parity"]
    assert parity["max_abs_diff_batch_1"] <= 1e-4 and parity["max_abs_diff_batch_64"] <= 1e-4
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("latent", "image")
    assert inp.shape[1] == card.latent_dim and outp.shape[1:] == [28, 28, 1]
    for batch in (1, 5):  # dynamic batch axis
        latents = np.stack([latent_for_seed(s, card.latent_dim) for s in range(batch)])
        (images,) = session.run(None, {"latent": latents})
        assert images.shape == (batch, 28, 28, 1)
        assert images.min() >= -1.0 and images.max() <= 1.0
    from PIL import Image

    assert Image.open(out / "samples.png").size == (8 * 28 * 2, 8 * 28 * 2)


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    data_dir = _make_idx(tmp_path)
    run_dir = tmp_path / "vae"
    assert tiny_train("vae", run_dir, data_dir).returncode == 0
    result = cli(
        "train", "vae", "--data-dir", str(data_dir), "--run-dir", str(run_dir), "--epochs", "2",
        "--batch-size", "32", "--steps-per-epoch", "3", "--no-progress", "--resume",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stderr and "at epoch 1 of 2" in result.stderr
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_gan_trains_under_mirrored_strategy_over_two_logical_cpus(tmp_path: Path) -> None:
    data_dir = _make_idx(tmp_path)
    result = tiny_train(
        "gan", tmp_path / "mirrored", data_dir, "--strategy", "mirrored", "--cpu-devices", "2"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MirroredStrategy over 2 replica(s)" in result.stderr
    history = json.loads((tmp_path / "mirrored" / "history.json").read_text())
    assert np.isfinite(history[0]["g_loss"])
