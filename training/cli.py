"""`imagegen train | evaluate | export`: the training commands, registered on the main CLI.

TensorFlow is imported only inside the commands, so `imagegen serve` never loads it; a
command run without the train extra says so in one line (exit status 2), with the install.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

from service.extras import MissingExtra

KindArg = Annotated[
    Literal["gan", "vae", "cgan"],
    typer.Argument(help="Which network to train (cgan: class-conditional GAN)."),
]


# The top-level modules of the train extra (pyproject.toml) and what they pull in.
TRAIN_EXTRA_MODULES = frozenset(
    {"tensorflow", "keras", "tf2onnx", "tensorboard", "onnx", "scipy", "tqdm", "mlxtend"}
)
MISSING_EXTRA_EXIT_CODE = 2

Command = TypeVar("Command", bound=Callable[..., Any])


def needs_train_extra(command: Command) -> Command:
    """Turn a missing train-extra module into one line naming the install, and exit status 2."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as error:
            module = (error.name or "").partition(".")[0]
            if module not in TRAIN_EXTRA_MODULES:
                raise  # not the extra: a real bug, keep its traceback
            problem = MissingExtra(f"imagegen {command_name(command)}", "train", module)
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
            raise typer.Exit(MISSING_EXTRA_EXIT_CODE) from None

    return run  # type: ignore[return-value]


def command_name(command: Callable[..., Any]) -> str:
    return command.__name__.removesuffix("_command").removesuffix("_cli")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def train_command(
    kind: KindArg,
    dataset: Annotated[str, typer.Option(help="fashion-mnist or mnist.")] = "fashion-mnist",
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the IDX files (default: search known places).")
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder for checkpoints and logs [runs/<dataset>-<kind>]."),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Total epochs (a resumed run goes on to this).")
    ] = 30,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Global batch size, split over replicas. [the recipe's: 128, or 64/32 for "
            "batch64/batch32]",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="A GAN recipe from training/recipes.py: dcgan (shipped, the default), "
            "wide-d, deep-d, ttur, sn-d, r1, diffaugment, batch64, batch32; cgan only: "
            "batch32-ac (an auxiliary classifier on the discriminator).",
            show_default=False,
        ),
    ] = None,
    latent_dim: Annotated[
        int | None, typer.Option(min=1, help="Latent size [GANs 64, VAE 16].")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Adam learning rate [GANs 2e-4, VAE 1e-3].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and noise.")] = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir from its last checkpoint.")
    ] = False,
    strategy: Annotated[
        Literal["auto", "default", "mirrored", "multiworker"],
        typer.Option(
            help="tf.distribute strategy; auto: multi-worker with TF_CONFIG, mirrored on >1 GPU."
        ),
    ] = "auto",
    cpu_devices: Annotated[
        int, typer.Option(min=1, help="Split the CPU into N logical devices (to try mirroring).")
    ] = 1,
    max_train_images: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N images only (quick runs).")
    ] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(min=1, help="Cap the steps per epoch (quick runs).")
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Score the served network on the validation split every N epochs (and after "
            "the last), keeping the best checkpoint; 0: never. [5; a resumed run keeps its own "
            "unless this is given]",
            show_default=False,
        ),
    ] = None,
    eval_samples: Annotated[
        int | None,
        typer.Option(
            min=10,
            help="Generated images per validation score. [2000; a resumed run keeps its own "
            "unless this is given]",
            show_default=False,
        ),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Stop after the epoch in which the run's training time (evaluation not "
            "counted) reaches this many minutes.",
            show_default=False,
        ),
    ] = None,
    budget_clock: Annotated[
        Literal["wall", "cpu"] | None,
        typer.Option(
            help="How --max-minutes counts: wall-clock, or the process's CPU time (fair "
            "between runs sharing a machine). [wall]",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for TensorFlow's operations [all cores]; 1 with `taskset` "
            "runs several trainings side by side fairly.",
            show_default=False,
        ),
    ] = None,
    lr_decay_epochs: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="GANs: decay both learning rates linearly to 0 over the last N of --epochs "
            "(fixed in steps when the run starts; a resume keeps it unless given again, "
            "which sets a new window over the new --epochs: a warm restart). [0: constant "
            "rates]",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train a GAN or a VAE, with a checkpoint every epoch (resumable)."""
    _quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.recipes import DEFAULT_RECIPE, get_recipe
    from training.train import TrainConfig, split_cpu, train

    try:
        if recipe is not None and kind == "vae":
            raise ValueError("--recipe is for the GANs; a VAE has none")
        chosen = get_recipe(recipe or DEFAULT_RECIPE, kind) if kind != "vae" else None
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    if cpu_devices > 1:
        split_cpu(cpu_devices)
    # Given on the command line (else TrainConfig's defaults, or a resumed run's own).
    watching: dict[str, Any] = {
        name: value
        for name, value in (
            ("eval_every", eval_every),
            ("eval_samples", eval_samples),
            ("max_minutes", max_minutes),
            ("budget_clock", budget_clock),
            ("threads", threads),
            ("lr_decay_epochs", lr_decay_epochs),
        )
        if value is not None
    }
    config = TrainConfig(
        kind=kind,
        dataset=dataset,
        data_dir=str(data_dir) if data_dir else None,
        epochs=epochs,
        batch_size=batch_size or (chosen.batch_size if chosen else 128),
        recipe=chosen.name if chosen else None,
        latent_dim=latent_dim,
        learning_rate=learning_rate,
        seed=seed,
        strategy=strategy,
        max_train_images=max_train_images,
        steps_per_epoch=steps_per_epoch,
        **watching,
    )
    given = set(watching)
    target = run_dir or Path("runs") / f"{dataset}-{kind}"
    try:
        run = train(config, target, resume=resume, progress=progress, given=given)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    last = run.history[-1] if run.history else {}
    typer.echo(
        f"trained {target}: {len(run.history)} epochs, {run.seconds:.0f} s; last {json.dumps(last)}"
    )


def evaluate_cli(
    target: Annotated[
        Path, typer.Argument(help="A model folder (models/<name>, ONNX) or a training run folder.")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Data set to score against [from the card or run].")
    ] = None,
    num_samples: Annotated[int, typer.Option(min=100, help="Generated images to score.")] = 10000,
    seed: Annotated[int, typer.Option(help="First seed of the generated images.")] = 0,
    output: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
) -> None:
    """Score a model against real data (FD, precision/recall, density/coverage, classes)."""
    _quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.evaluate import evaluate_command

    try:
        evaluate_command(target, dataset, num_samples, seed, output)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add the training commands to a Typer app (the `imagegen` CLI)."""
    from training.export import export_command  # TensorFlow loads inside the command only

    app.command("train")(needs_train_extra(train_command))
    app.command("export")(needs_train_extra(export_command))
    app.command("evaluate")(needs_train_extra(evaluate_cli))


app = typer.Typer(
    help="Train, evaluate and export the served networks.",
    no_args_is_help=True,
    rich_markup_mode=None,  # rich markup would swallow `[GAN 64, VAE 16]` in the help texts
)


@app.callback()
def _main() -> None:
    """Train, evaluate and export the served networks."""


register(app)

if __name__ == "__main__":
    app()
