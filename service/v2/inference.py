"""What both v2 transports do: server and model metadata, readiness, and one inference through
the data plane's batchers (the same queue, limits and deadlines as v1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import __version__
from service.dataplane import DataPlane, ServedModel, encode_pngs
from service.errors import ModelNotFound, quoted
from service.v2.codec import (
    IMAGE,
    OUTPUT_NAMES,
    PNG,
    RawInput,
    decode_inputs,
    input_specs,
    output_specs,
)

SERVER_NAME = "imagegen"
EXTENSIONS = ("binary_tensor_data",)
PLATFORM = "onnxruntime_onnx"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def find_model(dataplane: DataPlane, name: str, version: str | None) -> ServedModel:
    """The named model (any phase); 404 when unknown or when `version` is not the served one."""
    served = dataplane.find(name)
    if version and version != served.card.version:
        raise ModelNotFound(
            f"model {served.name} has no version {quoted(version)} (serving {served.card.version})"
        )
    return served


def model_ready(dataplane: DataPlane, served: ServedModel) -> bool:
    return dataplane.ready and served.batcher.healthy


def model_metadata(served: ServedModel) -> dict[str, Any]:
    card = served.card

    def described(specs: Any) -> list[dict[str, Any]]:
        return [
            {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
            for spec in specs
        ]

    return {
        "name": served.name,
        "versions": [card.version],
        "platform": PLATFORM,
        "inputs": described(input_specs(card)),
        "outputs": described(output_specs(card)),
    }


@dataclass(frozen=True, slots=True)
class Output:
    """One output tensor: `image` as a uint8 array, `png` as a list of PNG bytes."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | None = None
    elements: list[bytes] | None = None


async def infer(
    dataplane: DataPlane,
    model: str,
    version: str | None,
    inputs: Sequence[RawInput],
    outputs: Sequence[str],
) -> tuple[ServedModel, list[Output]]:
    """Run one request; `outputs` are checked names in the order wanted (empty: all)."""
    served = dataplane.serving(model)
    find_model(dataplane, model, version)
    decoded = decode_inputs(
        inputs, served.card, dataplane.settings.max_items_per_request, served.name
    )
    wanted = list(outputs) or list(OUTPUT_NAMES)
    images: list[np.ndarray] | None = None
    pngs: list[bytes] | None = None
    if IMAGE in wanted:
        jobs = served.jobs(seeds=decoded.seeds, latents=decoded.latents, classes=decoded.classes)
        images = await served.run(jobs)  # type: ignore[assignment]  # no job asked for PNGs
        if PNG in wanted:
            assert images is not None
            pngs = await encode_pngs(images)
    else:
        pngs = await served.pngs(
            seeds=decoded.seeds, latents=decoded.latents, classes=decoded.classes
        )
    results: list[Output] = []
    for name in wanted:
        if name == IMAGE:
            assert images is not None
            array = np.stack(images)
            results.append(Output(IMAGE, "UINT8", list(array.shape), array=array))
        else:
            assert pngs is not None
            results.append(Output(PNG, "BYTES", [len(pngs)], elements=pngs))
    return served, results
