"""The training loop: distribution strategy, per-epoch checkpoints and resume, TensorBoard.

One run lives in one folder (`runs/<name>` by default, kept out of git):
`config.json` (what was asked), `ckpt/` (the latest checkpoints), `history.json`
(per-epoch losses and seconds), `tb/` (TensorBoard scalars and sample grids) and
`samples/epoch_NNN.png` (a grid of the fixed seeds 0..63 after each epoch).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.runtime.card import latent_for_seed, to_uint8

if TYPE_CHECKING:
    import tensorflow as tf

    from training.evaluate import Sampler

log = logging.getLogger(__name__)

Kind = Literal["gan", "vae"]
StrategyName = Literal["auto", "default", "mirrored", "multiworker"]
GRID_SEEDS = tuple(range(64))


@dataclass
class TrainConfig:
    """Everything that defines a run; saved as `config.json` and in the model card."""

    kind: Kind
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 128
    latent_dim: int | None = None  # default: 64 for the GAN, 16 for the VAE
    learning_rate: float | None = None  # default: 2e-4 for the GAN, 1e-3 for the VAE
    seed: int = 0
    strategy: StrategyName = "auto"
    max_train_images: int | None = None  # a slice for quick runs and tests
    steps_per_epoch: int | None = None  # cap per epoch, for quick runs and tests
    model_options: dict[str, Any] = field(default_factory=dict)
    code_revision: str | None = None  # git revision of training/ when the run started

    def resolved_latent_dim(self) -> int:
        return self.latent_dim or (64 if self.kind == "gan" else 16)

    def resolved_learning_rate(self) -> float:
        return self.learning_rate or (2e-4 if self.kind == "gan" else 1e-3)


def code_revision() -> str:
    """The git commit of the training code, with '+dirty' when the tree has changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def split_cpu(logical_devices: int) -> None:
    """Split the CPU into N logical devices (before TensorFlow starts), e.g. to test mirroring."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(logical_devices)]
    )


def make_strategy(name: StrategyName) -> tf.distribute.Strategy:
    """`auto`: multi-worker when TF_CONFIG is set, mirrored over several GPUs, else default."""
    import tensorflow as tf

    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def build_model(config: TrainConfig) -> Any:
    options = dict(config.model_options)
    latent_dim, lr = config.resolved_latent_dim(), config.resolved_learning_rate()
    if config.kind == "gan":
        from training.gan import GAN

        return GAN(latent_dim, learning_rate=lr, seed=config.seed, **options)
    from training.vae import VAE

    return VAE(latent_dim, learning_rate=lr, seed=config.seed, **options)


def sample_grid(network: Any, latent_dim: int, output_range: tuple[float, float]) -> np.ndarray:
    """uint8 grid (8*28, 8*28) of the fixed seeds, as the service would render them."""
    latents = np.stack([latent_for_seed(s, latent_dim) for s in GRID_SEEDS])
    images = to_uint8(np.asarray(network(latents, training=False)), output_range)[..., 0]
    rows = [np.concatenate(list(images[r * 8 : (r + 1) * 8]), axis=1) for r in range(8)]
    return np.concatenate(rows, axis=0)


class Run:
    """A training run folder: its model, checkpoint manager and history."""

    def __init__(
        self, run_dir: Path, config: TrainConfig, strategy: tf.distribute.Strategy
    ) -> None:
        import tensorflow as tf

        self.run_dir = Path(run_dir)
        self.config = config
        self.strategy = strategy
        with strategy.scope():
            self.model = build_model(config)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **self.model.checkpoint_objects())
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.run_dir / "ckpt", max_to_keep=3
        )
        self.history: list[dict[str, float]] = []
        history_path = self.run_dir / "history.json"
        if history_path.is_file():
            self.history = json.loads(history_path.read_text())

    def restore(self) -> int:
        """Restore the latest checkpoint; returns the number of finished epochs."""
        if self.manager.latest_checkpoint is None:
            raise FileNotFoundError(f"no checkpoint in {self.run_dir / 'ckpt'}")
        self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
        done = int(self.epoch.numpy())
        self.history = [h for h in self.history if h["epoch"] <= done]
        return done

    @property
    def seconds(self) -> float:
        return float(sum(h["seconds"] for h in self.history))

    def save(self) -> None:
        self.manager.save(checkpoint_number=int(self.epoch.numpy()))
        (self.run_dir / "history.json").write_text(json.dumps(self.history, indent=1))


def save_config(run_dir: Path, config: TrainConfig) -> None:
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (no config.json)")
    return TrainConfig(**json.loads(path.read_text()))


def open_run(run_dir: Path, strategy_name: StrategyName = "default") -> Run:
    """Open an existing run at its latest checkpoint (for export and evaluation)."""
    config = load_config(run_dir)
    run = Run(run_dir, config, make_strategy(strategy_name))
    run.restore()
    return run


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Run:
    """Train (or resume) a run; checkpoints after every epoch. Returns the finished run."""
    import tensorflow as tf
    from tqdm import tqdm

    from training.data import load_dataset, make_tf_dataset

    run_dir = Path(run_dir)
    has_checkpoint = (run_dir / "ckpt" / "checkpoint").is_file()
    if has_checkpoint and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or pick another --run-dir"
        )
    if resume and has_checkpoint:
        saved = load_config(run_dir)
        # A resumed run keeps its recipe; only the target epoch count may grow.
        config = dataclasses.replace(saved, epochs=config.epochs, strategy=config.strategy)
    else:
        config = dataclasses.replace(config, code_revision=code_revision())
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)

    import keras

    keras.utils.set_random_seed(config.seed)
    data = load_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None)
    images = data.train_images[: config.max_train_images]
    strategy = make_strategy(config.strategy)
    run = Run(run_dir, config, strategy)
    log.info(
        "training %s on %s (%d images) with %s over %d replica(s)",
        config.kind,
        data.name,
        len(images),
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    start_epoch = run.restore() if resume and has_checkpoint else 0
    if start_epoch:
        log.info("resuming %s at epoch %d of %d", run_dir, start_epoch, config.epochs)
    model = run.model
    steps = len(images) // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{len(images)} images is less than one batch of {config.batch_size}")

    @tf.function
    def distributed_step(batch: Any) -> dict[str, tf.Tensor]:
        out = strategy.run(model.train_step, args=(batch,))
        model.after_step()
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in out.items()
        }

    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    (run_dir / "samples").mkdir(exist_ok=True)
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch shuffle seed: a resumed run sees the same order as an unbroken one.
        ds = make_tf_dataset(
            images, config.batch_size, value_range=model.output_range, seed=config.seed + epoch
        ).take(steps)
        dist = strategy.experimental_distribute_dataset(ds)
        sums: dict[str, float] = {}
        started = time.monotonic()
        bar = tqdm(
            dist,
            total=steps,
            desc=f"{config.kind} epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            mininterval=2.0,
            dynamic_ncols=True,
        )
        for i, batch in enumerate(bar, start=1):
            out = distributed_step(batch)
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            if i % 20 == 0 or i == steps:
                bar.set_postfix({k: f"{v / i:.3f}" for k, v in sums.items()})
        seconds = time.monotonic() - started
        means = {k: v / steps for k, v in sums.items()}
        if not all(np.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"epoch {epoch + 1}: non-finite losses {means}; stopping")
        run.epoch.assign(epoch + 1)
        run.history.append({"epoch": epoch + 1, "seconds": seconds, "steps": steps, **means})
        grid = sample_grid(model.served, model.latent_dim, model.output_range)
        from PIL import Image

        Image.fromarray(grid).save(run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
        with writer.as_default(step=epoch + 1):
            for key, value in means.items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("epoch_seconds", seconds)
            tf.summary.image("samples", grid[None, ..., None], max_outputs=1)
        run.save()
        log.info("epoch %d/%d %.0fs %s", epoch + 1, config.epochs, seconds, means)
    writer.flush()
    return run


def keras_sampler(run_dir: Path, *, raw_generator: bool = False) -> Sampler:
    """A Sampler over a run's latest checkpoint: the served network as Keras runs it.

    `raw_generator=True` samples a GAN's live generator instead of its EMA copy, to measure
    what the averaging buys.
    """
    from training.evaluate import Sampler

    run = open_run(run_dir)
    network, output_range = run.model.served, run.model.output_range
    if raw_generator:
        network = run.model.generator

    def generate(latents: np.ndarray) -> np.ndarray:
        chunks = [
            to_uint8(np.asarray(network(latents[i : i + 500], training=False)), output_range)
            for i in range(0, len(latents), 500)
        ]
        return np.concatenate(chunks, axis=0)

    epoch = int(run.epoch.numpy())
    return Sampler(
        latent_dim=run.model.latent_dim,
        generate=generate,
        description=f"Keras checkpoint {run.manager.latest_checkpoint} (epoch {epoch}, "
        f"{'raw generator' if raw_generator else 'served network'})",
    )
