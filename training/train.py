"""The training loop: distribution strategy, per-epoch checkpoints and resume, TensorBoard.

One run lives in one folder (`runs/<name>` by default, kept out of git):
`config.json` (what was asked), `ckpt/` (the latest checkpoints), `ckpt_best/` and
`best.json` (the checkpoint with the lowest validation FD so far), `history.json`
(per-epoch losses, seconds and validation scores), `tb/` (TensorBoard scalars and sample
grids) and `samples/epoch_NNN.png` (a grid of the fixed seeds 0..63 after each epoch).

Every `eval_every` epochs (and after the last) the served network (the GAN's EMA
generator, with BatchNorm statistics recomputed) draws `eval_samples` images, scored by
the evaluator's classifier against the validation split: train images held out of
training and of every reported figure (training/data.py).

Under MultiWorkerMirroredStrategy every worker runs the same loop; the chief writes the
run folder, the others write theirs under `<run>/worker-<task id>/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from service.runtime.card import latent_for_seed, to_uint8

if TYPE_CHECKING:
    import tensorflow as tf

    from training.evaluate import Sampler

log = logging.getLogger(__name__)

Kind = Literal["gan", "vae", "cgan"]
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
    latent_dim: int | None = None  # default: 64 for the GANs, 16 for the VAE
    learning_rate: float | None = None  # default: 2e-4 for the GANs, 1e-3 for the VAE
    seed: int = 0
    strategy: StrategyName = "auto"
    max_train_images: int | None = None  # a slice for quick runs and tests
    steps_per_epoch: int | None = None  # cap per epoch, for quick runs and tests
    model_options: dict[str, Any] = field(default_factory=dict)
    code_revision: str | None = None  # git revision of training/ when the run started
    eval_every: int = 5  # epochs between validation scores; 0: none (the last epoch always)
    eval_samples: int = 2000  # generated images per validation score
    hold_out_validation: bool = True  # keep the validation split out of training
    recipe: str | None = None  # a GAN's named recipe (training/recipes.py); its model_options
    max_minutes: float | None = None  # stop after the epoch that reaches this training time
    budget_clock: Literal["wall", "cpu"] = "wall"  # how max_minutes is counted
    threads: int | None = None  # TensorFlow's op threads, if capped (--threads)
    # A GAN's learning rates fall linearly to 0 over the last N of `epochs`; the window is
    # fixed in `model_options` (in steps) when the run starts, so a resume keeps it, unless
    # the resume names a new one (a warm restart), which moves the old window here.
    lr_decay_epochs: int = 0
    earlier_lr_decay_windows: list[dict[str, int]] = field(default_factory=list)

    def resolved_latent_dim(self) -> int:
        return self.latent_dim or (16 if self.kind == "vae" else 64)

    def resolved_learning_rate(self) -> float:
        return self.learning_rate or (1e-3 if self.kind == "vae" else 2e-4)

    def resolved_model_options(self) -> dict[str, Any]:
        """The recipe's model options (a GAN's), overridden by `model_options`."""
        if self.recipe is None:
            return dict(self.model_options)
        if self.kind == "vae":
            raise ValueError(f"recipes are for the GANs; a VAE has none (got {self.recipe!r})")
        from training.recipes import get_recipe

        return {**get_recipe(self.recipe, self.kind).model_options, **self.model_options}


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


def limit_threads(threads: int) -> None:
    """Run TensorFlow's operations on `threads` threads; only before TensorFlow's runtime
    starts (a warning, and no change, after)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:
        log.warning("cannot limit TensorFlow to %d thread(s) once it has started: %s", threads, exc)


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
    options = config.resolved_model_options()
    latent_dim, lr = config.resolved_latent_dim(), config.resolved_learning_rate()
    if config.kind == "gan":
        from training.gan import GAN

        return GAN(latent_dim, learning_rate=lr, seed=config.seed, **options)
    if config.kind == "cgan":
        from training.cgan import CGAN
        from training.data import class_names

        options.setdefault("num_classes", len(class_names(config.dataset)))
        return CGAN(latent_dim, learning_rate=lr, seed=config.seed, **options)
    from training.vae import VAE

    return VAE(latent_dim, learning_rate=lr, seed=config.seed, **options)


def sample_grid(
    network: Any,
    latent_dim: int,
    output_range: tuple[float, float],
    served_inputs: Any = None,
) -> np.ndarray:
    """uint8 grid (8*28, 8*28) of the fixed seeds, as the service would render them
    (`served_inputs(latents, seeds)`: the network's inputs, for a conditional model)."""
    latents = np.stack([latent_for_seed(s, latent_dim) for s in GRID_SEEDS])
    inputs = served_inputs(latents, GRID_SEEDS) if served_inputs else latents
    images = to_uint8(np.asarray(network(inputs, training=False)), output_range)[..., 0]
    rows = [np.concatenate(list(images[r * 8 : (r + 1) * 8]), axis=1) for r in range(8)]
    return np.concatenate(rows, axis=0)


def epoch_cpu_seconds(entry: dict[str, float]) -> float:
    """A history entry's process CPU time of training (older entries without it: their wall
    time)."""
    return entry.get("cpu_seconds", entry["seconds"])


class CheckpointMismatchError(ValueError):
    """A checkpoint lacks objects (or variables) that the run's model has."""


def restore_checkpoint(checkpoint: tf.train.Checkpoint, path: str, names: list[str]) -> None:
    """Restore `path` into `checkpoint` (whose objects are `names`); raise
    CheckpointMismatchError if any object or variable has no value in the file."""
    status = checkpoint.restore(path)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not hold every object of this run "
            f"({', '.join(names)}); "
            f"was it written by a different model or recipe? TensorFlow says: {exc}"
        ) from exc


class Run:
    """A training run folder: its model, checkpoint manager and history."""

    def __init__(
        self, run_dir: Path, config: TrainConfig, strategy: tf.distribute.Strategy
    ) -> None:
        import tensorflow as tf

        self.run_dir = worker_dir(Path(run_dir), strategy)
        self.config = config
        self.strategy = strategy
        with strategy.scope():
            self.model = build_model(config)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **self.model.checkpoint_objects())
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.run_dir / "ckpt", max_to_keep=3
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, self.run_dir / "ckpt_best", max_to_keep=1
        )
        self.history: list[dict[str, float]] = []
        history_path = self.run_dir / "history.json"
        if history_path.is_file():
            self.history = json.loads(history_path.read_text())
        self.run_epochs = len(self.history)
        self.restored_from: Literal["last", "best"] | None = None
        best_path = self.run_dir / "best.json"
        self.best: dict[str, Any] | None = (
            json.loads(best_path.read_text()) if best_path.is_file() else None
        )

    def restore(self, which: Literal["last", "best"] = "last") -> int:
        """Restore the latest (or the best-scoring) checkpoint; returns its epoch.

        Every object of the run (networks, EMA copy, optimisers, epoch) must be in the
        checkpoint: one that is not would silently keep its fresh initial values.
        """
        manager = self.best_manager if which == "best" else self.manager
        if manager.latest_checkpoint is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        restore_checkpoint(
            self.checkpoint,
            manager.latest_checkpoint,
            ["epoch", *self.model.checkpoint_objects()],
        )
        done = int(self.epoch.numpy())
        self.history = [h for h in self.history if h["epoch"] <= done]
        if which == "last" and self.best is not None and self.best["epoch"] > done:
            self.best = None  # from epochs this resume will redo
        return done

    def save_best(self, epoch: int, scores: dict[str, float]) -> None:
        self.best_manager.save(checkpoint_number=epoch)
        self.best = {"epoch": epoch, **scores}
        (self.run_dir / "best.json").write_text(json.dumps(self.best, indent=1))

    @property
    def seconds(self) -> float:
        return float(sum(h["seconds"] for h in self.history))

    @property
    def cpu_seconds(self) -> float:
        return float(sum(epoch_cpu_seconds(h) for h in self.history))

    def save(self) -> None:
        self.manager.save(checkpoint_number=int(self.epoch.numpy()))
        (self.run_dir / "history.json").write_text(json.dumps(self.history, indent=1))


def worker_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """The folder this process writes: the run folder, or a sub-folder for a non-chief worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None)
    if resolver is None or task_type is None:
        return run_dir
    cluster = resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster
    )
    return run_dir if is_chief else run_dir / f"{task_type}-{task_id}"


def save_config(run_dir: Path, config: TrainConfig) -> None:
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run folder (no config.json)")
    saved = json.loads(path.read_text())
    if "eval_every" not in saved:
        # A run from before validation scoring trained on every train image; keep it so.
        saved.update(eval_every=0, hold_out_validation=False)
    return TrainConfig(**saved)


def open_run(
    run_dir: Path,
    strategy_name: StrategyName = "default",
    checkpoint: Literal["last", "best"] = "last",
) -> Run:
    """Open an existing run at its latest or best checkpoint (for export and evaluation).

    `best` falls back to the latest checkpoint, with a warning, for a run that never
    scored itself (validation off, or a run from before it existed).
    """
    config = load_config(run_dir)
    run = Run(run_dir, config, make_strategy(strategy_name))
    if checkpoint == "best" and run.best_manager.latest_checkpoint is None:
        log.warning("%s has no best checkpoint (no validation scores); using the last", run_dir)
        checkpoint = "last"
    run.restore(checkpoint)
    run.restored_from = checkpoint
    return run


def decay_window(config: TrainConfig, steps_per_epoch: int) -> dict[str, int]:
    """The GAN options that decay the learning rates over the run's last `lr_decay_epochs`."""
    if config.kind == "vae":
        raise ValueError("--lr-decay-epochs is for the GANs; the VAE has no decay")
    if not 0 < config.lr_decay_epochs <= config.epochs:
        raise ValueError(
            f"--lr-decay-epochs must be between 1 and --epochs ({config.epochs}), "
            f"not {config.lr_decay_epochs}"
        )
    return {
        "lr_decay_start": (config.epochs - config.lr_decay_epochs) * steps_per_epoch,
        "lr_decay_end": config.epochs * steps_per_epoch,
    }


def fix_decay_window(config: TrainConfig, steps_per_epoch: int, *, rewindow: bool) -> TrainConfig:
    """`config` with its decay window in `model_options`: set when the run starts, kept on a
    resume, or (`rewindow`: a resume that names --lr-decay-epochs) replaced by the window
    over the last `lr_decay_epochs` of the new `epochs`, the old one kept in the record."""
    options = dict(config.model_options)
    current = {key: options[key] for key in DECAY_WINDOW_KEYS if key in options}
    if current and not rewindow:
        return config
    wanted = decay_window(config, steps_per_epoch) if config.lr_decay_epochs else {}
    if wanted == current:
        return config
    earlier = list(config.earlier_lr_decay_windows)
    if current:
        earlier.append(current)
        log.info(
            "learning-rate decay: window %s replaced by %s",
            "..".join(str(current[key]) for key in DECAY_WINDOW_KEYS),
            "..".join(str(wanted[key]) for key in DECAY_WINDOW_KEYS) if wanted else "none",
        )
    for key in DECAY_WINDOW_KEYS:
        options.pop(key, None)
    return dataclasses.replace(
        config, model_options={**options, **wanted}, earlier_lr_decay_windows=earlier
    )


# Besides the epoch count and the strategy, what a resumed run may change when asked to:
# how it is watched, and a GAN's learning-rate decay (a new window over the last N of the
# new --epochs: a warm restart, recorded), not what it trains.
RESUME_MAY_CHANGE = (
    "eval_every",
    "eval_samples",
    "max_minutes",
    "budget_clock",
    "threads",
    "lr_decay_epochs",
)
DECAY_WINDOW_KEYS = ("lr_decay_start", "lr_decay_end")


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    given: Collection[str] = (),
) -> Run:
    """Train (or resume) a run; checkpoints after every epoch. Returns the finished run.

    A resumed run keeps its recipe: only the target epoch count and the strategy come from
    `config`, and, among the fields named in `given` (those the caller set explicitly), how
    it is watched (`eval_every`, `eval_samples`)."""
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
        watching = {name: getattr(config, name) for name in RESUME_MAY_CHANGE if name in given}
        for name, value in watching.items():
            if value != getattr(saved, name):
                log.info("resuming with %s=%s (the run had %s)", name, value, getattr(saved, name))
        config = dataclasses.replace(
            saved, epochs=config.epochs, strategy=config.strategy, **watching
        )
    else:
        config = dataclasses.replace(config, code_revision=code_revision())
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, config)
    if config.threads:
        limit_threads(config.threads)

    import keras

    keras.utils.set_random_seed(config.seed)
    data_dir = Path(config.data_dir) if config.data_dir else None
    data = load_dataset(config.dataset, data_dir)
    if config.hold_out_validation:
        pool, validation_images = data.split_validation()
    elif config.eval_every:
        raise ValueError("validation scores need the validation split held out of training")
    else:
        pool, validation_images = data.train_images, data.train_images[:0]
    images = pool[: config.max_train_images]
    labels = None
    if config.kind == "cgan":
        from training.data import validation_mask

        kept = (
            ~validation_mask(len(data.train_labels))
            if config.hold_out_validation
            else np.ones(len(data.train_labels), dtype=bool)
        )
        labels = data.train_labels[kept][: config.max_train_images]
    scorer = None
    if config.eval_every:
        from training.evaluate import ValidationScorer

        scorer = ValidationScorer(data.name, validation_images, data_dir=data_dir)
    steps = len(images) // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{len(images)} images is less than one batch of {config.batch_size}")
    windowed = fix_decay_window(config, steps, rewindow=resume and "lr_decay_epochs" in given)
    if windowed is not config:
        config = windowed
        save_config(run_dir, config)
    strategy = make_strategy(config.strategy)
    run = Run(run_dir, config, strategy)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "training %s on %s (%d images, %d held out for validation) with %s over %d replica(s)",
        config.kind,
        data.name,
        len(images),
        len(validation_images),
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    start_epoch = run.restore() if resume and has_checkpoint else 0
    if start_epoch:
        log.info("resuming %s at epoch %d of %d", run_dir, start_epoch, config.epochs)
    model = run.model

    @tf.function
    def distributed_step(batch: Any) -> dict[str, tf.Tensor]:
        out = strategy.run(model.train_step, args=(batch,))
        model.after_step()
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in out.items()
        }

    writer = tf.summary.create_file_writer(str(run.run_dir / "tb"))
    (run.run_dir / "samples").mkdir(exist_ok=True)
    for epoch in range(start_epoch, config.epochs):
        # Per-epoch shuffle seed: a resumed run sees the same order as an unbroken one.
        ds = make_tf_dataset(
            images,
            config.batch_size,
            value_range=model.output_range,
            seed=config.seed + epoch,
            labels=labels,
            num_classes=getattr(model, "num_classes", 0),
        ).take(steps)
        dist = strategy.experimental_distribute_dataset(ds)
        sums: dict[str, float] = {}
        started, cpu_started = time.monotonic(), time.process_time()
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
        cpu_seconds = time.process_time() - cpu_started
        means = {k: v / steps for k, v in sums.items()}
        if not all(np.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"epoch {epoch + 1}: non-finite losses {means}; stopping")
        run.epoch.assign(epoch + 1)
        entry: dict[str, float] = {
            "epoch": epoch + 1,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "steps": steps,
            **means,
        }
        grid = sample_grid(model.served, model.latent_dim, model.output_range, model_inputs(model))
        from PIL import Image

        Image.fromarray(grid).save(run.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
        scores = None
        spent = (
            run.cpu_seconds + cpu_seconds if config.budget_clock == "cpu" else run.seconds + seconds
        )
        out_of_time = config.max_minutes is not None and spent >= config.max_minutes * 60
        last = epoch + 1 == config.epochs or out_of_time
        if scorer is not None and ((epoch + 1) % config.eval_every == 0 or last):
            started = time.monotonic()
            scores = validation_scores(model, scorer, config.eval_samples)
            entry.update({f"val_{k}": v for k, v in scores.items()})
            entry["val_seconds"] = time.monotonic() - started
            if run.best is None or scores["frechet_distance"] < run.best["frechet_distance"]:
                run.save_best(epoch + 1, scores)
        run.history.append(entry)
        with writer.as_default(step=epoch + 1):
            for key, value in means.items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("epoch_seconds", seconds)
            for key, value in (scores or {}).items():
                tf.summary.scalar(f"validation/{key}", value)
            tf.summary.image("samples", grid[None, ..., None], max_outputs=1)
        run.save()
        log.info("epoch %d/%d %.0fs %s", epoch + 1, config.epochs, seconds, means)
        if scores is not None and run.best is not None:
            log.info(
                "validation after epoch %d (%d samples vs %d held-out images): FD %.2f, "
                "precision %.3f, recall %.3f, coverage %.3f; best FD %.2f at epoch %d",
                epoch + 1,
                config.eval_samples,
                scorer.num_images if scorer else 0,
                scores["frechet_distance"],
                scores["precision"],
                scores["recall"],
                scores["coverage"],
                run.best["frechet_distance"],
                run.best["epoch"],
            )
        if out_of_time:
            log.info(
                "stopping after epoch %d: %.1f %s minutes of training reached the budget of %g",
                epoch + 1,
                (run.cpu_seconds if config.budget_clock == "cpu" else run.seconds) / 60,
                config.budget_clock,
                config.max_minutes,
            )
            break
    writer.flush()
    return run


def model_inputs(model: Any) -> Any:
    """`served_inputs(latents, seeds)` for a conditional model, None for the others."""
    return model.served_inputs if getattr(model, "num_classes", 0) else None


def generate_uint8(
    network: Any, latents: np.ndarray | list[np.ndarray], output_range: tuple[float, float]
) -> np.ndarray:
    """uint8 images of a Keras network in inference mode, in chunks of 500 latents (a list
    of arrays for a network with several inputs)."""
    rows = len(latents[0]) if isinstance(latents, list) else len(latents)

    def chunk(i: int) -> Any:
        if isinstance(latents, list):
            return [part[i : i + 500] for part in latents]
        return latents[i : i + 500]

    chunks = [
        to_uint8(np.asarray(network(chunk(i), training=False)), output_range)
        for i in range(0, rows, 500)
    ]
    return np.concatenate(chunks, axis=0)


def validation_scores(model: Any, scorer: Any, num_samples: int) -> dict[str, float]:
    """Score `num_samples` images of the served network as it would be exported.

    The GAN's EMA generator gets its BatchNorm statistics recomputed for the sample, then
    put back, so the checkpoint (and a resumed run) is the same as without scoring.
    """
    from training.batchnorm import batchnorm_statistics_kept
    from training.evaluate import VALIDATION_FIRST_SEED

    seeds = range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + num_samples)
    latents = np.stack([latent_for_seed(s, model.latent_dim) for s in seeds])
    served_inputs = model_inputs(model)
    inputs = served_inputs(latents, seeds) if served_inputs else latents
    with batchnorm_statistics_kept(model.served):
        model.prepare_served()
        images = generate_uint8(model.served, inputs, model.output_range)
    scores: dict[str, float] = scorer(images)
    return scores


SamplerNetwork = Literal["served", "served_copied_bn", "raw"]


def keras_sampler(
    run_dir: Path,
    *,
    network: SamplerNetwork = "served",
    checkpoint: Literal["last", "best"] = "last",
) -> Sampler:
    """A Sampler over a run's checkpoint, as Keras runs it.

    `served`: what export writes (a GAN's EMA generator with BatchNorm statistics
    recomputed); `served_copied_bn`: the EMA generator with the statistics it trained with
    (copied from the live generator); `raw`: a GAN's live generator. The last two measure
    what the recomputation and the averaging buy.
    """
    from training.evaluate import Sampler

    run = open_run(run_dir, checkpoint=checkpoint)
    output_range = run.model.output_range
    if network == "raw":
        chosen, prepared = run.model.generator, "raw generator"
    else:
        bn = "copied" if network == "served_copied_bn" else "recompute"
        chosen, prepared = run.model.served, run.model.prepare_served(bn)

    num_classes = getattr(run.model, "num_classes", 0)

    def generate(latents: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        inputs = latents if weights is None else [latents, weights]
        return generate_uint8(chosen, inputs, output_range)

    epoch = int(run.epoch.numpy())
    return Sampler(
        latent_dim=run.model.latent_dim,
        num_classes=num_classes,
        generate=generate,
        description=f"Keras checkpoint {run.restored_from} of {run_dir} (epoch {epoch}, "
        f"{'served network, ' if network != 'raw' else ''}{prepared})",
    )
