"""Compare GAN recipes at equal training time on this machine (issue 11).

    python -m training.compare run --dataset fashion-mnist --minutes 15 \\
        --recipes dcgan,wide-d,ttur,sn-d,r1,batch64 --seeds 0
    python -m training.compare report --dataset fashion-mnist
    python -m training.compare curves RUN [RUN...] --out docs/recipes/runs/NAME

`run` trains every (recipe, seed) pair for the same budget of CPU time, `--parallel`
at a time, each pinned to its own core (`taskset`) with one TensorFlow thread, so runs
side by side get the same share of the machine. Each scores its served network (the EMA
generator, BatchNorm statistics recomputed) on the validation split every ~`--eval-steps`
steps: the curve. A run that stopped early resumes; a finished one is left alone.

`report` reads the run folders and writes `docs/recipes/<dataset>.json` (the curves) and
`docs/recipes/<dataset>.png` (validation FD against training minutes); `curves` plots long
runs' validation FD and precision against steps (with their decay windows) into
`docs/recipes/runs/` ("Long runs" in docs/quality.md); `python -m
training.report` puts the table into docs/quality.md. The x axis is CPU minutes of
training (the process's CPU time, evaluation not counted): with one thread per run it is the
run's wall-clock on an idle core, and it does not stretch when something else shares the
machine, as wall-clock does.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from training.recipes import RECIPES, get_recipe
from training.train import DECAY_WINDOW_KEYS, epoch_cpu_seconds

app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode=None)

RUNS_ROOT = Path("runs") / "compare"
DOCS_DIR = Path("docs") / "recipes"
CHECKPOINT_MINUTES = (5, 10, 15, 20, 30, 45, 60)


def run_folder(root: Path, dataset: str, recipe: str, seed: int) -> Path:
    return root / dataset / f"{recipe}-seed{seed}"


def train_pool_size(dataset: str, data_dir: Path | None = None) -> int:
    """Training images left after the validation split is held out."""
    from training.data import load_dataset

    pool, _ = load_dataset(dataset, data_dir).split_validation()
    return len(pool)


def train_args(
    dataset: str,
    recipe: str,
    seed: int,
    minutes: float,
    eval_steps: int,
    pool: int,
    run: Path,
    data_dir: Path | None = None,
    eval_samples: int = 2000,
) -> list[str]:
    """`imagegen train` arguments for one run: epochs of at most `eval_steps` steps (a
    small data set's epochs are shorter; then several make one scoring interval)."""
    batch = get_recipe(recipe).batch_size
    steps_per_epoch = min(pool // batch, eval_steps)
    eval_every = max(1, round(eval_steps / steps_per_epoch))
    return [
        "gan",
        "--dataset",
        dataset,
        "--recipe",
        recipe,
        "--seed",
        str(seed),
        "--run-dir",
        str(run),
        "--epochs",
        "100000",
        "--steps-per-epoch",
        str(steps_per_epoch),
        "--eval-every",
        str(eval_every),
        "--eval-samples",
        str(eval_samples),
        "--max-minutes",
        str(minutes),
        "--budget-clock",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
        *(["--data-dir", str(data_dir)] if data_dir else []),
    ]


def finished(run: Path, minutes: float) -> bool:
    """Whether the run has trained for `minutes` CPU minutes."""
    history = run / "history.json"
    if not history.is_file():
        return False
    entries = json.loads(history.read_text())
    return sum(epoch_cpu_seconds(h) for h in entries) >= minutes * 60


@app.command()
def run(
    dataset: Annotated[str, typer.Option(help="fashion-mnist or mnist.")] = "fashion-mnist",
    recipes: Annotated[
        str, typer.Option(help=f"Comma-separated recipes of: {', '.join(RECIPES)}.")
    ] = "dcgan,wide-d,ttur,sn-d,r1,batch64",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    minutes: Annotated[
        float, typer.Option(help="Training CPU minutes per run (one thread: wall-clock).")
    ] = 15.0,
    eval_steps: Annotated[int, typer.Option(help="Steps between validation scores.")] = 250,
    eval_samples: Annotated[int, typer.Option(help="Generated images per score.")] = 2000,
    parallel: Annotated[
        int, typer.Option(help="Runs at a time, one per core [cores available].")
    ] = 0,
    root: Annotated[Path, typer.Option(help="Folder of the run folders.")] = RUNS_ROOT,
    cores: Annotated[
        str | None,
        typer.Option(help="Comma-separated cores to pin runs to [every core usable here]."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the IDX files (default: search known places).")
    ] = None,
) -> None:
    """Train each recipe x seed for the same training time, `parallel` at a time."""
    names = [r.strip() for r in recipes.split(",") if r.strip()]
    for name in names:
        get_recipe(name)  # unknown names fail before anything starts
    usable = [int(c) for c in cores.split(",")] if cores else sorted(os.sched_getaffinity(0))
    parallel = parallel or len(usable)
    pool = train_pool_size(dataset, data_dir)
    queue = [(name, int(seed)) for seed in seeds.split(",") for name in names]
    running: dict[int, tuple[subprocess.Popen[bytes], str]] = {}  # core -> (process, label)
    failed: list[str] = []
    imagegen = shutil.which("imagegen") or str(Path(sys.executable).parent / "imagegen")
    try:
        while queue or running:
            for core, (process, label) in list(running.items()):
                if process.poll() is not None:
                    typer.echo(f"{label}: finished (exit status {process.returncode})")
                    if process.returncode:
                        failed.append(label)
                    del running[core]
            free = [c for c in usable[:parallel] if c not in running]
            while queue and free:
                name, seed = queue.pop(0)
                folder = run_folder(root, dataset, name, seed)
                if finished(folder, minutes):
                    typer.echo(f"{folder}: already trained for {minutes} minutes")
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                args = train_args(
                    dataset, name, seed, minutes, eval_steps, pool, folder, data_dir, eval_samples
                )
                if (folder / "ckpt" / "checkpoint").is_file():
                    args.append("--resume")
                core = free.pop(0)
                log = (folder / "train.log").open("ab")
                command = ["taskset", "-c", str(core), imagegen, "train", *args]
                running[core] = (
                    subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT),
                    str(folder),
                )
                typer.echo(f"{folder}: started on core {core}")
            time.sleep(5)
    except KeyboardInterrupt:
        for process, _ in running.values():
            process.terminate()
        raise
    if failed:
        typer.secho(
            f"error: {len(failed)} run(s) failed; see train.log in {', '.join(failed)}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def curve(run: Path) -> list[dict[str, float]]:
    """The run's validation scores against cumulative training time and steps."""
    points: list[dict[str, float]] = []
    cpu = wall = steps = 0.0
    for entry in json.loads((run / "history.json").read_text()):
        cpu += epoch_cpu_seconds(entry)
        wall += entry["seconds"]
        steps += entry["steps"]
        if "val_frechet_distance" in entry:
            points.append(
                {
                    "cpu_minutes": round(cpu / 60, 3),
                    "wall_minutes": round(wall / 60, 3),
                    "steps": int(steps),
                    **{
                        key: round(entry[f"val_{key}"], 4)
                        for key in ("frechet_distance", "precision", "recall", "coverage")
                    },
                }
            )
    return points


def at_minute(points: list[dict[str, float]], minute: float) -> dict[str, float] | None:
    """The last score taken at or before `minute` CPU minutes (None if the run has none)."""
    before = [p for p in points if p["cpu_minutes"] <= minute + 1e-9]
    return before[-1] if before else None


def collect(root: Path, dataset: str) -> dict[str, Any]:
    runs = []
    for folder in sorted((root / dataset).glob("*-seed*")):
        if not (folder / "history.json").is_file():
            continue
        config = json.loads((folder / "config.json").read_text())
        recipe = config.get("recipe") or "dcgan"
        runs.append(
            {
                "recipe": recipe,
                "seed": config["seed"],
                "summary": RECIPES[recipe].summary if recipe in RECIPES else "",
                "batch_size": config["batch_size"],
                "steps_per_second": _steps_per_cpu_second(folder),
                "curve": curve(folder),
            }
        )
    return {"dataset": dataset, "runs": runs}


def _steps_per_cpu_second(folder: Path) -> float:
    history = json.loads((folder / "history.json").read_text())
    cpu = sum(epoch_cpu_seconds(h) for h in history)
    return round(sum(h["steps"] for h in history) / cpu, 3) if cpu else 0.0


def plot(results: dict[str, Any], out: Path) -> None:
    """Validation FD against CPU minutes, one line per run (log scale): one colour per
    recipe, seed 0 solid and other seeds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    recipes = list(dict.fromkeys(run["recipe"] for run in results["runs"]))
    colours = plt.get_cmap("tab10")
    for run in results["runs"]:
        points = run["curve"]
        if not points:
            continue
        ax.plot(
            [p["cpu_minutes"] for p in points],
            [p["frechet_distance"] for p in points],
            marker=".",
            linestyle="-" if run["seed"] == 0 else "--",
            color=colours(recipes.index(run["recipe"]) % 10),
            label=f"{run['recipe']} (seed {run['seed']})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("training time, CPU minutes on one core (evaluation not counted)")
    ax.set_ylabel("validation FD (2,000 samples)")
    ax.set_title(f"GAN recipes on {results['dataset']}: lower is better")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


@app.command()
def report(
    dataset: Annotated[str, typer.Option(help="fashion-mnist or mnist.")] = "fashion-mnist",
    root: Annotated[Path, typer.Option(help="Folder of the run folders.")] = RUNS_ROOT,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON and the plot go.")] = DOCS_DIR,
) -> None:
    """Write the curves (JSON) and their plot (PNG) of every run of `dataset`."""
    results = collect(root, dataset)
    if not results["runs"]:
        typer.secho(f"error: no runs under {root / dataset}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{dataset}.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out_dir / f"{dataset}.png")
    for line in comparison_table(results):
        typer.echo(line)


@app.command()
def curves(
    runs: Annotated[list[Path], typer.Argument(help="Training run folders (any length).")],
    out: Annotated[
        Path, typer.Option(help="Path without suffix: OUT.json (the points) and OUT.png.")
    ],
    title: Annotated[str, typer.Option(help="The plot's title.")] = "validation curves",
) -> None:
    """Plot long runs' validation FD and precision against training steps, and keep the
    points in JSON (run folders do not outlive a session; the curve should)."""
    results: dict[str, Any] = {"title": title, "runs": []}
    for folder in runs:
        if not (folder / "history.json").is_file():
            typer.secho(f"error: {folder} has no history.json", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        config = json.loads((folder / "config.json").read_text())
        windows = [
            *config.get("earlier_lr_decay_windows", []),
            {k: v for k, v in config.get("model_options", {}).items() if k in DECAY_WINDOW_KEYS},
        ]
        results["runs"].append(
            {
                "run": folder.name,
                "kind": config.get("kind"),
                "recipe": config.get("recipe") or "dcgan",
                "seed": config.get("seed"),
                "batch_size": config.get("batch_size"),
                "lr_decay_windows": [w for w in windows if w],
                "curve": curve(folder),
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not with_suffix: OUT may hold dots of its own (a version).
    out.parent.joinpath(f"{out.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_curves(results, out.parent / f"{out.name}.png")
    for run in results["runs"]:
        last = run["curve"][-1] if run["curve"] else {}
        typer.echo(f"{run['run']}: {len(run['curve'])} scores; last {json.dumps(last)}")


def plot_curves(results: dict[str, Any], out: Path) -> None:
    """Two panels against training steps: validation FD (log) and precision, with each
    run's learning-rate decay windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fd_ax, precision_ax) = plt.subplots(2, 1, figsize=(8, 6), dpi=100, sharex=True)
    for index, run in enumerate(results["runs"]):
        points = run["curve"]
        colour = plt.get_cmap("tab10")(index % 10)
        steps = [p["steps"] for p in points]
        label = f"{run['run']} (recipe {run['recipe']}, batch {run['batch_size']})"
        fd_ax.plot(steps, [p["frechet_distance"] for p in points], ".-", color=colour, label=label)
        precision_ax.plot(steps, [p["precision"] for p in points], ".-", color=colour)
        for window in run["lr_decay_windows"]:
            for ax in (fd_ax, precision_ax):
                ax.axvspan(
                    window["lr_decay_start"], window["lr_decay_end"], color=colour, alpha=0.08
                )
    fd_ax.set_yscale("log")
    fd_ax.set_ylabel("validation FD")
    precision_ax.set_ylabel("validation precision")
    precision_ax.set_xlabel("training steps (shaded: learning rates decaying to zero)")
    fd_ax.set_title(results["title"])
    for ax in (fd_ax, precision_ax):
        ax.grid(True, which="both", alpha=0.3)
    fd_ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def comparison_table(results: dict[str, Any]) -> list[str]:
    """Markdown: validation FD at equal CPU minutes, and the last scores, per run."""
    runs = [r for r in results["runs"] if r["curve"]]
    budget = min(r["curve"][-1]["cpu_minutes"] for r in runs) if runs else 0.0
    marks = [m for m in CHECKPOINT_MINUTES if m <= budget + 1e-9]
    if budget and (not marks or marks[-1] < math.floor(budget)):
        marks.append(math.floor(budget))
    lines = [
        "| recipe | seed | steps per CPU s | "
        + " | ".join(f"FD at {m} min" for m in marks)
        + " | last: steps | FD | precision | recall | coverage |",
        "|---|---:|---:|" + "---:|" * len(marks) + "---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        cells = []
        for minute in marks:
            point = at_minute(run["curve"], minute)
            cells.append(f"{point['frechet_distance']:.1f}" if point else "-")
        last = run["curve"][-1]
        lines.append(
            f"| {run['recipe']} | {run['seed']} | {run['steps_per_second']:.2f} | "
            + " | ".join(cells)
            + f" | {last['steps']} | {last['frechet_distance']:.1f} | {last['precision']:.3f} | "
            f"{last['recall']:.3f} | {last['coverage']:.3f} |"
        )
    return lines


if __name__ == "__main__":
    app()
