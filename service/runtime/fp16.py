"""fp16 variants: convert a model folder's fp32 ONNX graph to float16, check it against the
original, and write it as a model folder of its own (`<name>-fp16/`, with its own card).

The variant keeps float32 input and output (casts at the graph's edges), so it meets the same
artifact contract and the service serves it like any other model. Converting needs the `onnx`
package (the fp16 extra, installed from the checkout); serving the result does not.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.extras import install_hint
from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ModelCard,
    class_for_seed,
    class_weights,
    latent_for_seed,
    sha256_file,
    to_uint8,
)
from service.runtime.providers import CPU, ProviderSpec
from service.runtime.registry import InvalidModel, check_signature, read_card

FP16_SUFFIX = "-fp16"
DEFAULT_SAMPLES = 64
DEFAULT_MAX_UINT8_DIFF = 4  # levels of 255: fp16 rounding moves a pixel by one level, rarely two


class ParityError(RuntimeError):
    """The fp16 graph's images differ from the fp32 graph's by more than allowed."""


@dataclass(frozen=True)
class Parity:
    """How far the fp16 variant's output is from the fp32 original on the same latents."""

    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    max_uint8_diff: int
    differing_pixels: float
    allowed_max_uint8_diff: int
    providers: list[str]

    @property
    def passed(self) -> bool:
        return self.max_uint8_diff <= self.allowed_max_uint8_diff


def variant_name(name: str) -> str:
    return f"{name}{FP16_SUFFIX}"


def is_variant(card: ModelCard) -> bool:
    return card.onnx.model_dump().get("precision") == "fp16"


def convert_graph(fp32_path: Path, fp16_path: Path) -> dict[str, str]:
    """Write the float16 version of an ONNX file; the versions of the tools that did it."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as error:
        raise RuntimeError(
            f"converting to fp16 needs the onnx package ({error}); {install_hint('fp16')}"
        ) from error
    model = onnx.load(str(fp32_path))
    # keep_io_types: float32 in and out, so the card's input/output contract still holds.
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(fp16_path))
    return {"onnxruntime.transformers.float16": f"{ort.__version__} (onnx {onnx.__version__})"}


def measure_parity(
    fp32_path: Path,
    fp16_path: Path,
    card: ModelCard,
    *,
    samples: int = DEFAULT_SAMPLES,
    max_uint8_diff: int = DEFAULT_MAX_UINT8_DIFF,
    providers: Sequence[ProviderSpec] = (CPU,),
) -> Parity:
    """Run both graphs on the latents of seeds 0..samples-1 (a conditional model: each seed
    as its class, seed % num_classes) and compare their outputs."""
    latents = np.stack([latent_for_seed(seed, card.latent_dim) for seed in range(samples)])
    feeds = {card.input_name: latents}
    if card.conditioning is not None:
        count = card.conditioning.num_classes
        classes = np.array([class_for_seed(seed, count) for seed in range(samples)])
        feeds[card.conditioning.input_name] = class_weights(classes, count)
    outputs = []
    used: list[str] = []
    for path in (fp32_path, fp16_path):
        session = ort.InferenceSession(str(path), providers=list(providers))
        used = session.get_providers()
        (output,) = session.run([card.output_name], feeds)
        outputs.append(np.asarray(output, dtype=np.float32))
    reference, candidate = outputs
    if not np.isfinite(candidate).all():
        raise ParityError(f"{fp16_path}: the fp16 graph gives NaN or infinity (fp16 overflow)")
    difference = np.abs(reference - candidate)
    output_range = card.image.output_range
    pixel_difference = np.abs(
        to_uint8(reference, output_range).astype(np.int16)
        - to_uint8(candidate, output_range).astype(np.int16)
    )
    return Parity(
        samples=samples,
        max_abs_diff=float(difference.max()),
        mean_abs_diff=float(difference.mean()),
        max_uint8_diff=int(pixel_difference.max()),
        differing_pixels=float((pixel_difference > 0).mean()),
        allowed_max_uint8_diff=max_uint8_diff,
        providers=list(used),
    )


def variant_card(
    card: ModelCard, sha256: str, producers: dict[str, str], parity: Parity
) -> ModelCard:
    """The fp16 variant's card: the original's, renamed, with its own digest and parity."""
    data: dict[str, Any] = card.model_dump(mode="json")
    data["name"] = variant_name(card.name)
    data["description"] = (
        f"{card.description} fp16 variant of {card.name} {card.version} (float16 weights and "
        "arithmetic; float32 input and output)."
    ).strip()
    onnx_info = data["onnx"]
    onnx_info["sha256"] = sha256
    onnx_info["producers"] = {**onnx_info.get("producers", {}), **producers}
    onnx_info["precision"] = "fp16"
    onnx_info["converted_from"] = {
        "name": card.name,
        "version": card.version,
        "sha256": card.onnx.sha256,
    }
    onnx_info["parity"] = asdict(parity)
    return ModelCard.model_validate(data)


def convert_model_dir(
    source_dir: Path,
    out_dir: Path | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    max_uint8_diff: int = DEFAULT_MAX_UINT8_DIFF,
    providers: Sequence[ProviderSpec] = (CPU,),
    overwrite: bool = False,
) -> tuple[Path, ModelCard]:
    """Make `<name>-fp16/` next to `source_dir` (or in `out_dir`); its folder and card.

    Refuses a source whose card does not match its file, and leaves nothing behind when the
    variant fails its parity check (ParityError) or does not load.
    """
    card = read_card(source_dir)
    if is_variant(card):
        raise InvalidModel(source_dir / CARD_FILENAME, "is already an fp16 variant")
    fp32_path = source_dir / ONNX_FILENAME
    digest = sha256_file(fp32_path)
    if digest != card.onnx.sha256:
        raise InvalidModel(
            fp32_path, f"sha256 is {digest}, but {CARD_FILENAME} says {card.onnx.sha256}"
        )
    target = (out_dir if out_dir is not None else source_dir.parent) / variant_name(card.name)
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists (use overwrite to replace it)")
        shutil.rmtree(target)
    # Build in a sibling folder and rename at the end, so a half-made variant is never served.
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        fp16_path = partial / ONNX_FILENAME
        producers = convert_graph(fp32_path, fp16_path)
        parity = measure_parity(
            fp32_path,
            fp16_path,
            card,
            samples=samples,
            max_uint8_diff=max_uint8_diff,
            providers=providers,
        )
        if not parity.passed:
            raise ParityError(
                f"{source_dir.name}: fp16 images differ by up to {parity.max_uint8_diff} levels "
                f"of 255 (allowed {max_uint8_diff}; max |difference| {parity.max_abs_diff:.4g} "
                f"over {samples} seeds); not writing {target}"
            )
        new_card = variant_card(card, sha256_file(fp16_path), producers, parity)
        check_signature(ort.InferenceSession(str(fp16_path), providers=[CPU]), new_card, fp16_path)
        new_card.dump(partial / CARD_FILENAME)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target, new_card
