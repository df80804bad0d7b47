"""Tensors of the Open Inference Protocol in and out: JSON `data`, Triton's binary tensor
extension (REST) and raw contents (gRPC), checked into the two inputs our models take.

Every model has the inputs `latent` (FP32 `[n, latent_dim]`) and `seed` (INT64 `[n]`, the seed
contract), exactly one of them per request, and the outputs `image` (UINT8 `[n, h, w, c]`) and
`png` (BYTES `[n]`). Anything else is a `TensorError` (400 on REST, INVALID_ARGUMENT on gRPC)
whose message says what is wrong.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import ServiceError, TooManyItems, quoted
from service.runtime.card import MAX_SEED, ModelCard

LATENT = "latent"
SEED = "seed"
CLASS = "class"
IMAGE = "image"
PNG = "png"
INPUT_NAMES = (LATENT, SEED)
OUTPUT_NAMES = (IMAGE, PNG)
MAX_JSON_DEPTH = 8  # nested `data` lists: a latent needs 2; more is an attack or a mistake


class TensorError(ServiceError):
    """A request whose tensors do not fit the model: 400 (the protocol's bad request)."""

    status_code = 400
    error_type = "invalid_tensor"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size (the batch axis)


def input_specs(card: ModelCard) -> list[TensorSpec]:
    specs = [TensorSpec(LATENT, "FP32", (-1, card.latent_dim)), TensorSpec(SEED, "INT64", (-1,))]
    if card.conditioning is not None:  # class-conditional: a class index per row
        specs.append(TensorSpec(CLASS, "INT64", (-1,)))
    return specs


def output_specs(card: ModelCard) -> list[TensorSpec]:
    image = card.image
    return [
        TensorSpec(IMAGE, "UINT8", (-1, image.height, image.width, image.channels)),
        TensorSpec(PNG, "BYTES", (-1,)),
    ]


@dataclass(frozen=True, slots=True)
class RawInput:
    """One input tensor as the client sent it: header fields and either values or bytes."""

    name: str
    datatype: str
    shape: list[int]
    values: Any = None  # JSON `data` (nested lists) or protobuf typed contents (a sequence)
    raw: bytes | None = None  # binary extension or gRPC raw_input_contents


@dataclass(frozen=True, slots=True)
class Inputs:
    """The checked inputs: exactly one of seeds and latents, `count` rows."""

    count: int
    seeds: list[int] | None = None
    latents: np.ndarray | None = None  # float32 [count, latent_dim], all finite
    classes: list[int] | None = None  # conditional models: a class index per row


def check_shape(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise TensorError(f"{where}: 'shape' must be a list of integers")
    if any(d < 0 for d in value):
        raise TensorError(f"{where}: shape {value} has a negative dimension")
    return value


def decode_inputs(
    tensors: Sequence[RawInput], card: ModelCard, max_items: int, model: str
) -> Inputs:
    """The request's `latent` or `seed`, checked against the model; TensorError otherwise,
    TooManyItems (413) for more rows than `max_items` (checked before any data is read)."""
    seen: dict[str, RawInput] = {}
    names = INPUT_NAMES + ((CLASS,) if card.conditioning is not None else ())
    for tensor in tensors:
        if tensor.name not in names:
            raise TensorError(
                f"unknown input {quoted(tensor.name)}; model {model} takes 'latent' "
                f"(FP32 [n, {card.latent_dim}]) or 'seed' (INT64 [n])"
                + (", and 'class' (INT64 [n])" if card.conditioning is not None else "")
            )
        if tensor.name in seen:
            raise TensorError(f"input {quoted(tensor.name)} is given twice")
        seen[tensor.name] = tensor
    class_tensor = seen.pop(CLASS, None)
    if len(seen) != 1:
        raise TensorError(
            "give exactly one input: 'latent' or 'seed'"
            + (" (not both)" if len(seen) > 1 else f"; model {model} takes either")
        )
    inputs = _decode_rows(next(iter(seen.values())), card, max_items)
    if card.conditioning is None:
        return inputs
    classes = card.conditioning.classes
    if class_tensor is None:
        if inputs.latents is not None:
            raise TensorError(
                f"model {model} is class-conditional: a latent needs the input 'class' "
                f"(INT64 [n], 0..{len(classes) - 1}: {', '.join(classes)})"
            )
        return inputs  # a seed's own class, seed % num_classes
    if class_tensor.datatype != "INT64":
        raise TensorError(f"input 'class' must be INT64, got {quoted(class_tensor.datatype)}")
    if class_tensor.shape != [inputs.count]:
        raise TensorError(
            f"input 'class' must have shape [{inputs.count}] (one per row), "
            f"got {class_tensor.shape}"
        )
    indices = _int64_elements(class_tensor, inputs.count)
    bad = next((c for c in indices if not 0 <= c < len(classes)), None)
    if bad is not None:
        raise TensorError(
            f"class {bad} is not one of model {model}'s classes: 0..{len(classes) - 1} "
            f"({', '.join(classes)})"
        )
    return Inputs(inputs.count, inputs.seeds, inputs.latents, indices)


def _decode_rows(tensor: RawInput, card: ModelCard, max_items: int) -> Inputs:
    """The `latent` or `seed` tensor, checked."""
    if tensor.name == SEED:
        expected_type, row_shape = "INT64", []
    else:
        expected_type, row_shape = "FP32", [card.latent_dim]
    if tensor.datatype != expected_type:
        raise TensorError(
            f"input {tensor.name!r} must be {expected_type}, got {quoted(tensor.datatype)}"
        )
    shape = tensor.shape
    if len(shape) != 1 + len(row_shape) or shape[1:] != row_shape:
        wanted = "[n]" if tensor.name == SEED else f"[n, {card.latent_dim}]"
        raise TensorError(f"input {tensor.name!r} must have shape {wanted}, got {shape}")
    count = shape[0]
    if count < 1:
        raise TensorError(f"input {tensor.name!r} has no rows (shape {shape})")
    if count > max_items:
        raise TooManyItems(f"{count} images requested; the limit is {max_items}")
    elements = math.prod(shape)
    if tensor.name == SEED:
        seeds = _int64_elements(tensor, elements)
        bad = next((s for s in seeds if not 0 <= s < MAX_SEED), None)
        if bad is not None:
            raise TensorError(f"seed must be an integer 0 <= seed < 2**63, got {bad}")
        return Inputs(count=count, seeds=seeds)
    latents = _fp32_elements(tensor, elements).reshape(count, card.latent_dim)
    if not np.isfinite(latents).all():
        row = int(np.argwhere(~np.isfinite(latents))[0][0])
        raise TensorError(
            f"latent row {row} has a value that is not a finite float32 (NaN, infinity, or "
            "beyond +-3.4e38)"
        )
    return Inputs(count=count, latents=latents)


def _check_byte_size(tensor: RawInput, raw: bytes, elements: int, itemsize: int) -> None:
    if len(raw) != elements * itemsize:
        raise TensorError(
            f"input {tensor.name!r}: {len(raw)} bytes of data for shape {tensor.shape} "
            f"({elements} x {itemsize} bytes = {elements * itemsize} expected)"
        )


def _int64_elements(tensor: RawInput, elements: int) -> list[int]:
    if tensor.raw is not None:
        _check_byte_size(tensor, tensor.raw, elements, 8)
        return np.frombuffer(tensor.raw, dtype="<i8").tolist()  # type: ignore[no-any-return]
    values = flatten(tensor.values, tensor.name)
    if len(values) != elements:
        raise TensorError(
            f"input {tensor.name!r}: {len(values)} values for shape {tensor.shape} "
            f"({elements} expected)"
        )
    if not all(type(v) is int for v in values):
        bad = next(v for v in values if type(v) is not int)
        raise TensorError(f"input {tensor.name!r} holds INT64 values, got {quoted(repr(bad))}")
    return values


def _fp32_elements(tensor: RawInput, elements: int) -> np.ndarray:
    if tensor.raw is not None:
        _check_byte_size(tensor, tensor.raw, elements, 4)
        return np.frombuffer(tensor.raw, dtype="<f4").astype(np.float32)
    values = flatten(tensor.values, tensor.name)
    if len(values) != elements:
        raise TensorError(
            f"input {tensor.name!r}: {len(values)} values for shape {tensor.shape} "
            f"({elements} expected)"
        )
    if not all(type(v) is float or type(v) is int for v in values):
        bad = next(v for v in values if type(v) is not float and type(v) is not int)
        raise TensorError(f"input {tensor.name!r} holds FP32 numbers, got {quoted(repr(bad))}")
    try:
        wide = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise TensorError(f"input {tensor.name!r} has a value beyond float32") from None
    with np.errstate(over="ignore", invalid="ignore"):
        return wide.astype(np.float32)  # beyond float32 becomes inf: refused by the caller


def flatten(values: Any, name: str) -> list[Any]:
    """JSON `data`, flat or nested row-major, as one flat list."""
    if isinstance(values, (list, tuple)) and not any(isinstance(v, list) for v in values):
        return list(values)
    if values is None:
        raise TensorError(f"input {name!r} has neither 'data' nor binary_data_size")
    if not isinstance(values, (list, tuple)):
        raise TensorError(f"input {name!r}: 'data' must be a list of values")
    flat: list[Any] = []

    def walk(items: Iterable[Any], depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise TensorError(f"input {name!r}: 'data' is nested more than {MAX_JSON_DEPTH} deep")
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                flat.append(item)

    walk(values, 1)
    return flat


# -- outputs ----------------------------------------------------------------------------------


def check_outputs(names: Iterable[str], model: str) -> list[str]:
    """The requested output names, in the order asked; unknown or repeated ones refused."""
    wanted: list[str] = []
    for name in names:
        if name not in OUTPUT_NAMES:
            raise TensorError(
                f"unknown output {quoted(name)}; model {model} gives 'image' (UINT8) and "
                "'png' (BYTES)"
            )
        if name in wanted:
            raise TensorError(f"output {name!r} is requested twice")
        wanted.append(name)
    return wanted


def bytes_tensor(elements: Sequence[bytes]) -> bytes:
    """BYTES elements in the binary layout: each a 4-byte little-endian length, then bytes."""
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def output_bytes(output: Any) -> bytes:
    """An output tensor's elements in the binary layout (REST binary data, gRPC raw contents)."""
    if output.array is not None:
        return output.array.tobytes()  # type: ignore[no-any-return]
    return bytes_tensor(output.elements)


def json_bytes_data(elements: Sequence[bytes]) -> list[str]:
    """BYTES elements in JSON: base64 text (PNG bytes are not UTF-8), marked by the output's
    `content_type: base64` parameter."""
    return [base64.b64encode(element).decode("ascii") for element in elements]


def parameter_bool(parameters: Mapping[str, Any], name: str, where: str) -> bool | None:
    value = parameters.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise TensorError(f"{where}: parameter {name!r} must be true or false")


# -- REST bodies: JSON, with Triton's binary tensor extension ----------------------------------


@dataclass(frozen=True, slots=True)
class RestInferRequest:
    id: str | None
    inputs: list[RawInput]
    outputs: list[str]  # empty: every output
    binary_outputs: frozenset[str]  # outputs to send as binary data; the others as JSON
    binary_default: bool  # `binary_data_output`: for outputs not listed (when none are)


def _refuse_constant(name: str) -> None:
    raise TensorError(f"request body is not valid JSON: {name} is not a JSON number")


# Built once: json.loads and json.dumps with options build a new decoder or encoder per call,
# which was a third of the v2 codec's time per request.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def parse_rest_infer(raw: bytes, header_length: bytes | None) -> RestInferRequest:
    """An infer request body: a JSON object, followed (when `Inference-Header-Content-Length`
    says where the JSON ends) by the binary data of the inputs with `binary_data_size`."""
    if header_length is not None:
        text = header_length.decode("latin-1").strip()
        if not text.isdigit() or int(text) > len(raw):
            raise TensorError(
                f"Inference-Header-Content-Length is {quoted(text)} but the body has "
                f"{len(raw)} bytes"
            )
        split = int(text)
        head, binary = raw[:split], memoryview(raw)[split:]
    else:
        head, binary = raw, memoryview(b"")
    try:
        document = _DECODER.decode(head.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        reason = "nested too deep" if isinstance(error, RecursionError) else str(error)
        raise TensorError(f"request body is not valid JSON: {reason}") from None
    if not isinstance(document, dict):
        raise TensorError("the inference request must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise TensorError("'id' must be a string")
    parameters = _object(document.get("parameters"), "parameters")
    binary_default = bool(parameter_bool(parameters, "binary_data_output", "request"))
    inputs_json = document.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise TensorError("'inputs' must be a non-empty list of tensors")
    inputs: list[RawInput] = []
    offset = 0
    for index, item in enumerate(inputs_json):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise TensorError(f"{where} must be an object")
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise TensorError(f"{where} needs a 'name' and a 'datatype' (strings)")
        shape = check_shape(item.get("shape"), f"input {name!r}")
        size = _object(item.get("parameters"), f"input {name!r} parameters").get("binary_data_size")
        if size is None:  # no data at all is refused after the names are checked
            inputs.append(RawInput(name, datatype, shape, values=item.get("data")))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TensorError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise TensorError(
                f"input {name!r}: binary_data_size {size} goes past the end of the body "
                f"({len(binary)} bytes of binary data after the JSON header)"
            )
        inputs.append(RawInput(name, datatype, shape, raw=bytes(binary[offset : offset + size])))
        offset += size
    if offset != len(binary):
        raise TensorError(
            f"the body has {len(binary)} bytes of binary data after the JSON header, but the "
            f"inputs' binary_data_size add up to {offset}"
        )
    outputs_json = document.get("outputs", [])
    if not isinstance(outputs_json, list):
        raise TensorError("'outputs' must be a list")
    names: list[str] = []
    binary_outputs: set[str] = set()
    for index, item in enumerate(outputs_json):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TensorError(f"outputs[{index}] must be an object with a 'name'")
        name = item["name"]
        names.append(name)
        wanted = parameter_bool(
            _object(item.get("parameters"), f"output {name!r} parameters"), "binary_data", name
        )
        if wanted if wanted is not None else binary_default:
            binary_outputs.add(name)
    return RestInferRequest(
        id=request_id,
        inputs=inputs,
        outputs=names,
        binary_outputs=frozenset(binary_outputs),
        binary_default=binary_default,
    )


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where} must be an object")
    return value


def rest_infer_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: Sequence[Any],
    binary: frozenset[str] | set[str],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.name in binary:
            chunk = output_bytes(output)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        elif output.array is not None:
            entry["data"] = output.array.ravel().tolist()
        else:
            entry["parameters"] = {"content_type": "base64"}
            entry["data"] = json_bytes_data(output.elements)
        described.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = described
    head = _ENCODER.encode(document).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
