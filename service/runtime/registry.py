"""Model registry: find `models/<name>/`, verify each artifact against its card, load and warm it.

Start-up does every expensive check once (card, sha256, input/output names and shapes, a
warm-up run), so the hot path does none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ModelCard,
    class_for_seed,
    class_weights,
    latent_for_seed,
    sha256_file,
)
from service.runtime.providers import ProviderPlan, check_providers_in_use
from service.runtime.session import ImageGenerator, create_session

logger = logging.getLogger(__name__)

FLOAT_TENSOR = "tensor(float)"


class InvalidModel(Exception):
    """A model folder that cannot be served; the message names the file and the mismatch."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ModelLoadError(RuntimeError):
    """Start-up cannot go on: no models, or invalid ones while invalid models are not skipped."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up model ready to serve."""

    name: str
    directory: Path
    card: ModelCard
    generator: ImageGenerator
    load_seconds: float

    @property
    def providers(self) -> list[str]:
        return self.generator.providers


@dataclass
class LoadResult:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    invalid: list[InvalidModel] = field(default_factory=list)


def discover_model_dirs(models_dir: Path) -> list[Path]:
    """Sub-folders of `models_dir` holding a model.json or a model.onnx, sorted by name.

    A model.onnx without its card is a model folder too, so it is refused with a message
    rather than passed over in silence.
    """
    if not models_dir.is_dir():
        raise ModelLoadError(f"models directory {models_dir} does not exist or is not a folder")
    return sorted(
        path
        for path in models_dir.iterdir()
        if (path / CARD_FILENAME).is_file() or (path / ONNX_FILENAME).is_file()
    )


def read_card(model_dir: Path) -> ModelCard:
    card_path = model_dir / CARD_FILENAME
    if not card_path.is_file():
        raise InvalidModel(card_path, f"missing (the folder has {ONNX_FILENAME} but no card)")
    try:
        card = ModelCard.load(card_path)
    except OSError as error:
        raise InvalidModel(card_path, f"cannot read it: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'card'}: {e['msg']}"
            for e in error.errors()
        )
        raise InvalidModel(card_path, f"invalid model card: {problems}") from error
    if card.name != model_dir.name:
        raise InvalidModel(
            card_path, f"name {card.name!r} differs from its folder name {model_dir.name!r}"
        )
    return card


def _is_dynamic(dim: object) -> bool:
    return dim is None or isinstance(dim, str)


def _shape_text(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if _is_dynamic(d) else str(d) for d in shape) + "]"


def check_signature(session: ort.InferenceSession, card: ModelCard, onnx_path: Path) -> None:
    """The graph must take `[batch, latent_dim]` float32 (and, for a conditional card,
    `[batch, num_classes]` float32 class weights) and give `[batch, H, W, C]` float32."""
    inputs = {node.name: node for node in session.get_inputs()}
    names = sorted(inputs)
    expected_names = [card.input_name]
    if card.conditioning is not None:
        expected_names.append(card.conditioning.input_name)
    if names != sorted(expected_names):
        said = f"input_name={card.input_name!r}"
        if card.conditioning is not None:
            said += f" and conditioning.input_name={card.conditioning.input_name!r}"
        else:
            said += " and has no conditioning block"
        raise InvalidModel(onnx_path, f"graph inputs are {names}, but the card says {said}")
    if card.conditioning is not None:
        check_class_input(inputs[card.conditioning.input_name], card, onnx_path)
    node = inputs[card.input_name]
    expected_in = ["batch", card.latent_dim]
    shape = list(node.shape)
    if (
        node.type != FLOAT_TENSOR
        or len(shape) != 2
        or not _is_dynamic(shape[0])
        or (not _is_dynamic(shape[1]) and shape[1] != card.latent_dim)
    ):
        raise InvalidModel(
            onnx_path,
            f"input {node.name!r} is {node.type} {_shape_text(shape)}, but the card needs "
            f"float32 {_shape_text(expected_in)} with a dynamic batch axis",
        )
    outputs = {node.name: node for node in session.get_outputs()}
    if card.output_name not in outputs:
        raise InvalidModel(
            onnx_path,
            f"graph outputs are {sorted(outputs)}, but the card says "
            f"output_name={card.output_name!r}",
        )
    node = outputs[card.output_name]
    image = card.image
    expected_out: list[object] = ["batch", image.height, image.width, image.channels]
    shape = list(node.shape)
    if (
        node.type != FLOAT_TENSOR
        or len(shape) != 4
        or not _is_dynamic(shape[0])
        or any(
            not _is_dynamic(d) and d != e for d, e in zip(shape[1:], expected_out[1:], strict=True)
        )
    ):
        raise InvalidModel(
            onnx_path,
            f"output {node.name!r} is {node.type} {_shape_text(shape)}, but the card needs "
            f"float32 {_shape_text(expected_out)} (NHWC) with a dynamic batch axis",
        )


def check_class_input(node: ort.NodeArg, card: ModelCard, onnx_path: Path) -> None:
    """A conditional graph's class-weight input: float32 `[batch, num_classes]`."""
    expected = ["batch", card.num_classes]
    shape = list(node.shape)
    if (
        node.type != FLOAT_TENSOR
        or len(shape) != 2
        or not _is_dynamic(shape[0])
        or (not _is_dynamic(shape[1]) and shape[1] != card.num_classes)
    ):
        raise InvalidModel(
            onnx_path,
            f"class input {node.name!r} is {node.type} {_shape_text(shape)}, but the card "
            f"({card.num_classes} classes) needs float32 {_shape_text(expected)} with a dynamic "
            "batch axis",
        )


def load_model(
    model_dir: Path,
    plan: ProviderPlan,
    *,
    intra_op_threads: int = 0,
    batch_padding: str = "auto",
    max_batch_size: int = 32,
) -> LoadedModel:
    """Verify, load and warm up one model folder; raises InvalidModel naming the bad file."""
    started = time.perf_counter()
    card = read_card(model_dir)
    onnx_path = model_dir / ONNX_FILENAME
    if not onnx_path.is_file():
        raise InvalidModel(onnx_path, "missing (the card has no model file next to it)")
    digest = sha256_file(onnx_path)
    if digest != card.onnx.sha256:
        raise InvalidModel(
            onnx_path, f"sha256 is {digest}, but {CARD_FILENAME} says {card.onnx.sha256}"
        )
    try:
        session = create_session(onnx_path, plan, intra_op_threads)
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        raise InvalidModel(onnx_path, f"onnxruntime cannot load it: {error}") from error
    check_signature(session, card, onnx_path)
    check_providers_in_use(plan, session.get_providers(), card.name)
    on_cuda = "CUDAExecutionProvider" in session.get_providers()
    pad = batch_padding == "always" or (batch_padding == "auto" and on_cuda)
    generator = ImageGenerator(
        session, card, pad_to_rows=max_batch_size if pad else None, io_binding=on_cuda
    )
    warm_up(generator, onnx_path, max_batch_size)
    return LoadedModel(
        name=card.name,
        directory=model_dir,
        card=card,
        generator=generator,
        load_seconds=time.perf_counter() - started,
    )


def warm_up(generator: ImageGenerator, onnx_path: Path, max_batch_size: int) -> None:
    """Run the sizes serving will use once, so the first request pays no allocation or tuning."""
    card = generator.card
    for rows in sorted({1, max_batch_size}):
        latents = np.stack([latent_for_seed(seed, card.latent_dim) for seed in range(rows)])
        weights = None
        if card.conditioning is not None:
            classes = np.array([class_for_seed(seed, card.num_classes) for seed in range(rows)])
            weights = class_weights(classes, card.num_classes)
        try:
            raw = generator.run_raw(latents, weights)
        except Exception as error:
            raise InvalidModel(onnx_path, f"warm-up run of {rows} rows failed: {error}") from error
        expected = (rows, *generator.image_shape)
        if raw.shape != expected or raw.dtype != np.float32:
            raise InvalidModel(
                onnx_path,
                f"warm-up output is {raw.dtype} {list(raw.shape)}, expected float32 "
                f"{list(expected)}",
            )
        if not np.isfinite(raw).all():
            raise InvalidModel(onnx_path, "warm-up output holds NaN or infinity")


def load_models(
    models_dir: Path,
    plan: ProviderPlan,
    *,
    intra_op_threads: int = 0,
    batch_padding: str = "auto",
    max_batch_size: int = 32,
    skip_invalid: bool = False,
) -> LoadResult:
    """Load every model folder; invalid ones stop start-up unless `skip_invalid`."""
    result = LoadResult()
    model_dirs = discover_model_dirs(models_dir)
    if not model_dirs:
        raise ModelLoadError(f"no models in {models_dir} (expected <name>/{CARD_FILENAME})")
    for model_dir in model_dirs:
        try:
            model = load_model(
                model_dir,
                plan,
                intra_op_threads=intra_op_threads,
                batch_padding=batch_padding,
                max_batch_size=max_batch_size,
            )
        except InvalidModel as error:
            logger.error("invalid model: %s", error)
            result.invalid.append(error)
            continue
        result.models[model.name] = model
        logger.info(
            "loaded model %s version %s on %s in %.2f s",
            model.name,
            model.card.version,
            ", ".join(model.providers),
            model.load_seconds,
        )
    if result.invalid and not skip_invalid:
        problems = "\n  ".join(str(error) for error in result.invalid)
        raise ModelLoadError(
            f"{len(result.invalid)} invalid model(s); refusing to start "
            f"(set IMAGEGEN_SKIP_INVALID_MODELS=true to serve the rest):\n  {problems}"
        )
    if not result.models:
        raise ModelLoadError(f"no valid models in {models_dir}")
    return result
