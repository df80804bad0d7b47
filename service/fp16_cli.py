"""`imagegen fp16`: write the fp16 variant of models, each checked against its fp32 original."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.runtime.card import CARD_FILENAME
from service.runtime.fp16 import (
    DEFAULT_MAX_UINT8_DIFF,
    DEFAULT_SAMPLES,
    FP16_SUFFIX,
    ParityError,
    convert_model_dir,
    variant_name,
)
from service.runtime.providers import ProviderUnavailable, plan_providers
from service.runtime.registry import InvalidModel, ModelLoadError, discover_model_dirs, read_card


def fp16_command(
    model_dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Model folders to convert (models/<name>).", show_default=False),
    ] = None,
    models_dir: Annotated[
        Path | None,
        typer.Option(help="Convert every model in this folder (fp16 variants are skipped)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option(help="Where <name>-fp16/ goes; default: next to its source.")
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, max=4096, help="Seeds 0..N-1 compared in the parity check.")
    ] = DEFAULT_SAMPLES,
    max_uint8_diff: Annotated[
        int,
        typer.Option(min=0, max=255, help="Largest pixel difference allowed (levels of 255)."),
    ] = DEFAULT_MAX_UINT8_DIFF,
    providers: Annotated[
        str, typer.Option(help="Where the parity check runs: cpu, cuda or auto.")
    ] = "cpu",
    device_id: Annotated[int, typer.Option(min=0, help="CUDA device for --providers cuda.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a variant that exists (otherwise it is kept).")
    ] = False,
) -> None:
    """Convert fp32 models to fp16 variants (<name>-fp16/ with its own card) and check parity."""
    sources = list(model_dirs or [])
    if models_dir is not None:
        try:
            found = discover_model_dirs(models_dir)
        except ModelLoadError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(2) from None
        sources += [path for path in found if not path.name.endswith(FP16_SUFFIX)]
    if not sources:
        typer.echo("nothing to convert: name model folders or --models-dir", err=True)
        raise typer.Exit(2)
    try:
        plan = plan_providers(providers.strip().lower(), device_id)
    except (ProviderUnavailable, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    failures = 0
    for source in sources:
        try:
            source_card = read_card(source)
            name = source_card.name
            target = (out_dir if out_dir is not None else source.parent) / variant_name(name)
            if target.exists() and not overwrite:
                typer.echo(f"{name}: {target} exists, kept (--overwrite replaces it)")
                continue
            target, card = convert_model_dir(
                source,
                out_dir,
                samples=samples,
                max_uint8_diff=max_uint8_diff,
                providers=plan.specs,
                overwrite=overwrite,
            )
        except (InvalidModel, ParityError, OSError, RuntimeError) as error:
            failures += 1
            typer.echo(f"{source}: {error}", err=True)
            continue
        parity = card.onnx.model_dump()["parity"]
        typer.echo(
            f"{name} -> {target / CARD_FILENAME}: pixels differ by at most "
            f"{parity['max_uint8_diff']} of 255 on {parity['differing_pixels']:.2%} of them "
            f"({parity['samples']} seeds, max |difference| {parity['max_abs_diff']:.3g}, "
            f"on {', '.join(parity['providers'])})"
        )
    if failures:
        raise typer.Exit(1)
