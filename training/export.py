"""Export a trained run's served network to ONNX with its model card and a sample grid.

The ONNX graph has one input `latent` [batch, latent_dim] float32 and one output `image`
[batch, 28, 28, 1] float32 (NHWC), a dynamic batch axis, and an opset >= 13. A
class-conditional generator has a second input `class_weights` [batch, num_classes]
float32, named in the card's `conditioning` block with the class names. Export fails
unless onnxruntime matches Keras within `PARITY_TOLERANCE` at batch 1 and 64 (for a
conditional model: seeds with their own classes, and blends of two classes).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    SAMPLES_FILENAME,
    Conditioning,
    ImageSpec,
    ModelCard,
    OnnxInfo,
    class_for_seed,
    class_weights,
    latent_for_seed,
    sha256_file,
    to_uint8,
)

log = logging.getLogger(__name__)

INPUT_NAME = "latent"
CLASS_INPUT_NAME = "class_weights"
OUTPUT_NAME = "image"
DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4
PARITY_BATCH_SIZES = (1, 64)
SAMPLE_SEEDS = tuple(range(64))


class ParityError(RuntimeError):
    """onnxruntime's output differs from Keras' by more than the tolerance."""


def convert_to_onnx(
    network: Any, latent_dim: int, path: Path, opset: int = DEFAULT_OPSET, num_classes: int = 0
) -> None:
    """tf2onnx conversion of a functional Keras network with named input(s)/output, dynamic
    batch; `num_classes` > 0 adds the class-weight input."""
    import tensorflow as tf
    import tf2onnx

    spec: tuple[Any, ...] = (tf.TensorSpec((None, latent_dim), tf.float32, name=INPUT_NAME),)
    if num_classes:
        spec += (tf.TensorSpec((None, num_classes), tf.float32, name=CLASS_INPUT_NAME),)

        @tf.function(input_signature=spec)
        def serve(latent: tf.Tensor, weights: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_NAME: network([latent, weights], training=False)}

    else:

        @tf.function(input_signature=spec)
        def serve(latent: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUTPUT_NAME: network(latent, training=False)}

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    # Name the dynamic batch axis instead of tf2onnx's generated 'unk__N'.
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    path.write_bytes(model_proto.SerializeToString())


def parity_weights(batch: int, num_classes: int) -> np.ndarray:
    """Class weights for the parity check: seed 1000+i's own class, and for every other
    row a blend of it with the next class (so mixtures are checked too)."""
    classes = np.array([class_for_seed(1000 + i, num_classes) for i in range(batch)])
    weights = class_weights(classes, num_classes)
    blend = class_weights((classes + 1) % num_classes, num_classes)
    t = np.where(np.arange(batch) % 2 == 1, 0.3, 0.0).astype(np.float32)[:, None]
    return ((1.0 - t) * weights + t * blend).astype(np.float32)


def parity_check(
    network: Any, onnx_path: Path, latent_dim: int, num_classes: int = 0
) -> dict[str, float]:
    """Max |onnxruntime - Keras| on seeded latents at each batch size; raises over tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    report = {}
    for batch in PARITY_BATCH_SIZES:
        latents = np.stack([latent_for_seed(1000 + i, latent_dim) for i in range(batch)])
        feed = {INPUT_NAME: latents}
        if num_classes:
            feed[CLASS_INPUT_NAME] = parity_weights(batch, num_classes)
            expected = np.asarray(network([latents, feed[CLASS_INPUT_NAME]], training=False))
        else:
            expected = np.asarray(network(latents, training=False))
        (got,) = session.run([OUTPUT_NAME], feed)
        diff = float(np.abs(got - expected).max())
        report[f"max_abs_diff_batch_{batch}"] = diff
        if diff > PARITY_TOLERANCE:
            raise ParityError(
                f"{onnx_path}: batch {batch} differs from Keras by {diff:.3g} > {PARITY_TOLERANCE}"
            )
    report["tolerance"] = PARITY_TOLERANCE
    return report


def render_samples(
    onnx_path: Path, card: ModelCard, path: Path, columns: int = 8, scale: int = 2
) -> None:
    """A grid of the fixed seeds, rendered by onnxruntime exactly as the service would.

    A conditional model's grid has one row per class: row c holds seeds c, c + C, c + 2C,
    ... (C classes), which the seed contract maps to class c.
    """
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    seeds: list[int] = list(SAMPLE_SEEDS)
    feed: dict[str, np.ndarray] = {}
    if card.conditioning is not None:
        num_classes = card.num_classes
        seeds = [c + num_classes * j for c in range(num_classes) for j in range(columns)]
        classes = np.array([class_for_seed(s, num_classes) for s in seeds])
        feed[card.conditioning.input_name] = class_weights(classes, num_classes)
    feed[card.input_name] = np.stack([latent_for_seed(s, card.latent_dim) for s in seeds])
    (out,) = session.run([card.output_name], feed)
    images = to_uint8(out, card.image.output_range)[..., 0]
    rows = [
        np.concatenate(list(images[r : r + columns]), axis=1)
        for r in range(0, len(images), columns)
    ]
    grid = np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(grid).save(path, optimize=True)


def checkpoint_record(run: Any) -> dict[str, Any]:
    """Which checkpoint of the run was exported, and why (for the card's `training`)."""
    epoch = int(run.epoch.numpy())
    record: dict[str, Any] = {
        "selected": run.restored_from,
        "epoch": epoch,
        "run_epochs": run.run_epochs,
    }
    if run.restored_from == "best" and run.best is not None:
        record["rule"] = "lowest validation FD among the scored epochs"
        record["validation"] = {k: v for k, v in run.best.items() if k != "epoch"}
        record["validation_samples"] = run.config.eval_samples
    elif run.history and "val_frechet_distance" in run.history[-1]:
        record["validation"] = {
            k.removeprefix("val_"): v
            for k, v in run.history[-1].items()
            if k.startswith("val_") and k != "val_seconds"
        }
    return record


def producer_versions() -> dict[str, str]:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
    }


def export_run(
    run_dir: Path,
    out_dir: Path,
    *,
    name: str,
    version: str = "1.0.0",
    description: str | None = None,
    evaluate: bool = True,
    eval_samples: int = 10000,
    opset: int = DEFAULT_OPSET,
    checkpoint: Literal["best", "last"] = "best",
) -> ModelCard:
    """Write `model.onnx`, `model.json` and `samples.png` for a run's best checkpoint (lowest
    validation FD; the latest for a run without validation scores) or its latest."""
    import dataclasses

    from training.data import load_dataset
    from training.train import code_revision, open_run

    run = open_run(run_dir, checkpoint=checkpoint)
    model, config = run.model, run.config
    prepared = model.prepare_served()
    log.info("exporting %s checkpoint, epoch %d: %s", run.restored_from, int(run.epoch), prepared)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_FILENAME
    num_classes = getattr(model, "num_classes", 0)
    convert_to_onnx(model.served, model.latent_dim, onnx_path, opset, num_classes)
    parity = parity_check(model.served, onnx_path, model.latent_dim, num_classes)
    data = load_dataset(config.dataset, Path(config.data_dir) if config.data_dir else None)
    network = {
        "gan": "DCGAN generator (EMA weights)",
        "cgan": "Class-conditional DCGAN generator (EMA weights, projection discriminator)",
        "vae": "VAE decoder",
    }[model.kind]
    conditioning = (
        Conditioning(input_name=CLASS_INPUT_NAME, classes=list(data.class_names))
        if num_classes
        else None
    )
    if conditioning is not None and conditioning.num_classes != num_classes:
        raise ValueError(f"{data.name} has {conditioning.num_classes} classes, model {num_classes}")
    card = ModelCard(
        name=name,
        version=version,
        kind="vae" if model.kind == "vae" else "gan",
        conditioning=conditioning,
        description=description
        or f"{network} trained on {data.name} ({len(data.train_images)} training images).",
        latent_dim=model.latent_dim,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        image=ImageSpec(height=28, width=28, channels=1, output_range=model.output_range),
        dataset=data.card(),
        training={
            "epochs": int(run.epoch.numpy()),
            "checkpoint": checkpoint_record(run),
            "served_network": prepared,
            "steps": int(sum(h["steps"] for h in run.history)),
            "seconds": round(run.seconds, 1),
            "seed": config.seed,
            "batch_size": config.batch_size,
            "hyperparameters": model.hyperparameters,
            "config": dataclasses.asdict(config),
            "final_losses": {
                k: v
                for k, v in (run.history[-1] if run.history else {}).items()
                if k not in ("epoch", "seconds", "cpu_seconds", "steps")
            },
            "code_revision": config.code_revision
            or f"not recorded by the run; exported by {code_revision()}",
            "machine": f"{os.cpu_count()} CPU cores"
            + (f", {config.threads} TensorFlow thread(s)" if config.threads else ""),
        },
        metrics={"parity": parity},
        onnx=OnnxInfo(opset=opset, sha256=sha256_file(onnx_path), producers=producer_versions()),
    )
    card.dump(out_dir / CARD_FILENAME)
    render_samples(onnx_path, card, out_dir / SAMPLES_FILENAME)
    if evaluate:
        from training.evaluate import evaluate_sampler, onnx_sampler

        # Score the ONNX file itself: the metrics describe what is served.
        report = evaluate_sampler(
            onnx_sampler(out_dir),
            data.name,
            num_samples=eval_samples,
            data_dir=Path(config.data_dir) if config.data_dir else None,
        )
        card.metrics = {"parity": parity, "quality": report}
        card.dump(out_dir / CARD_FILENAME)
    return card


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (runs/<name>).")],
    out_dir: Annotated[Path, typer.Argument(help="Model folder to write (models/<name>).")],
    name: Annotated[str | None, typer.Option(help="Model name [the output folder's name].")] = None,
    version: Annotated[str, typer.Option(help="Model version for the card.")] = "1.0.0",
    description: Annotated[str | None, typer.Option(help="One-line description.")] = None,
    evaluate: Annotated[
        bool, typer.Option(help="Score the exported ONNX and put it in the card.")
    ] = True,
    eval_samples: Annotated[int, typer.Option(min=100, help="Generated images to score.")] = 10000,
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset.")] = DEFAULT_OPSET,
    checkpoint: Annotated[
        Literal["best", "last"],
        typer.Option(
            help="best: the checkpoint with the lowest validation FD (the latest when the run "
            "has no validation scores); last: the latest."
        ),
    ] = "best",
) -> None:
    """Export a run's best (or last) checkpoint to ONNX (parity-checked), with model.json
    and samples.png."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        card = export_run(
            run_dir,
            out_dir,
            name=name or out_dir.name,
            version=version,
            description=description,
            evaluate=evaluate,
            eval_samples=eval_samples,
            opset=opset,
            checkpoint=checkpoint,
        )
    except (FileNotFoundError, ValueError, ParityError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        json.dumps(
            {"model": card.name, "sha256": card.onnx.sha256, "parity": card.metrics.get("parity")},
            indent=2,
        )
    )
