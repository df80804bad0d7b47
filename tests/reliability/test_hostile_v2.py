"""Hostile input to the Open Inference Protocol, REST and gRPC, against a real server: every
case is a quick protocol error (a 4xx with `{"error": "..."}`; a gRPC status such as
INVALID_ARGUMENT) whose message says what is wrong; never a 500 or INTERNAL, never a hang,
and nothing reaches the model.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from tests.reliability.conftest import TINY, Launcher
from tests.reliability.harness import HOST, free_port, metric_sum, warnings_in
from tests.reliability.models import LATENT_DIM
from tests.reliability.report import record

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

MAX_BODY_BYTES = 65_536
MAX_ITEMS = 8
SLOW_ANSWER_S = 10.0
INFER = f"/v2/models/{TINY}/infer"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int = 400
    path: str = INFER
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    says: str = ""  # a phrase the message must hold


def _infer(*inputs: dict[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _seed(data: object, shape: object = None, datatype: str = "INT64") -> dict[str, object]:
    count = len(data) if isinstance(data, list) else 1
    return {"name": "seed", "datatype": datatype, "shape": shape or [count], "data": data}


def _latent(*values: str, rows: int = 1) -> bytes:
    padded = list(values) + ["0.5"] * (rows * LATENT_DIM - len(values))
    head = f'{{"inputs":[{{"name":"latent","datatype":"FP32","shape":[{rows},{LATENT_DIM}],'
    return (head + '"data":[' + ",".join(padded) + "]}]}").encode()


def _binary(header: dict[str, object], data: bytes, length: int | None = None) -> Case:
    head = json.dumps(header).encode()
    announced = str(len(head) if length is None else length)
    return Case(
        "",
        head + data,
        headers=(("Inference-Header-Content-Length", announced),),
    )


def _binary_seed(size: int, data: bytes, length: int | None = None) -> Case:
    header = {
        "inputs": [
            {
                "name": "seed",
                "datatype": "INT64",
                "shape": [1],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    return _binary(header, data, length)


def _named(case: Case, name: str, says: str = "") -> Case:
    return Case(name, case.body, case.status, case.path, case.method, case.headers, says)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _rest_cases() -> list[Case]:
    deep = 30_000  # under the body limit, far past the JSON parser's recursion limit
    nan_latent = struct.pack("<f", float("nan")) + b"\0" * 4 * (LATENT_DIM - 1)
    binary_latent = {
        "inputs": [
            {
                "name": "latent",
                "datatype": "FP32",
                "shape": [1, LATENT_DIM],
                "parameters": {"binary_data_size": 4 * LATENT_DIM},
            }
        ]
    }
    return [
        # The document.
        Case("not JSON", b'{"inputs": ['),
        Case("empty body", b""),
        Case("top-level array", b"[1, 2]"),
        Case("no inputs", b"{}"),
        Case("empty inputs", b'{"inputs": []}'),
        Case("input not an object", b'{"inputs": [7]}'),
        Case("input without datatype", b'{"inputs": [{"name": "seed", "shape": [1]}]}'),
        Case("id not a string", _infer(_seed([1]), id=5)),
        Case("parameters not an object", _infer(_seed([1]), parameters=[1])),
        Case("deep nesting", b'{"inputs": ' + b"[" * deep + b"]" * deep + b"}"),
        Case("data nested 20 deep", _infer(_seed([_nested(20)])), says="nested more than"),
        Case("invalid UTF-8", b'{"inputs": [{"name": "\xff\xfe"}]}'),
        # Names, types, shapes.
        Case(
            "unknown input",
            _infer({"name": "noise", "datatype": "FP32", "shape": [1], "data": [1]}),
            says="unknown input 'noise'",
        ),
        Case("seed given twice", _infer(_seed([1]), _seed([2]))),
        Case(
            "both latent and seed",
            _infer(
                _seed([1]),
                {"name": "latent", "datatype": "FP32", "shape": [1, LATENT_DIM], "data": []},
            ),
        ),
        Case("seed as FP32", _infer(_seed([1.0], datatype="FP32")), says="must be INT64"),
        Case("seed as BYTES", _infer(_seed(["1"], datatype="BYTES"))),
        Case("seed shape [1, 1]", _infer(_seed([1], shape=[1, 1]))),
        Case("seed shape of strings", _infer(_seed([1], shape=["1"]))),
        Case("negative dimension", _infer(_seed([1], shape=[-1]))),
        Case("zero rows", _infer(_seed([], shape=[0]))),
        Case("data count off", _infer(_seed([1, 2], shape=[3]))),
        Case(
            "no data",
            _infer({"name": "seed", "datatype": "INT64", "shape": [1]}),
            says="neither 'data' nor binary_data_size",
        ),
        Case("latent too short", _infer({"name": "latent", "datatype": "FP32", "shape": [1, 3]})),
        Case("unknown output", _infer(_seed([1]), outputs=[{"name": "mask"}])),
        Case("output twice", _infer(_seed([1]), outputs=[{"name": "png"}, {"name": "png"}])),
        Case(
            "binary_data not a boolean",
            _infer(_seed([1]), outputs=[{"name": "png", "parameters": {"binary_data": "yes"}}]),
        ),
        # Values.
        Case("negative seed", _infer(_seed([-1]))),
        Case("seed 2**63", _infer(_seed([2**63]))),
        Case("seed 10**30", _infer(_seed([10**30]))),
        Case("seed 7.5", _infer(_seed([7.5]))),
        Case("seed true", _infer(_seed([True]))),
        Case("seed as string", _infer(_seed(["7"]))),
        Case("NaN latent", _latent("NaN")),
        Case("Infinity latent", _latent("0", "-Infinity")),
        Case("latent beyond float32", _latent("1e39"), says="not a finite float32"),
        Case("latent overflowing double", _latent("1e999999"), says="not a finite float32"),
        Case("latent 10**400", _latent("1" + "0" * 400)),
        Case("latent of strings", _latent('"0.5"'), says="holds FP32 numbers"),
        Case("latent of booleans", _latent("true")),
        # Item limit, checked before any data is read.
        Case("rows over the item limit", _infer(_seed(list(range(MAX_ITEMS + 1)))), 413),
        Case("a trillion rows", _infer(_seed([1], shape=[10**12])), 413),
        # The binary extension.
        _named(
            _binary_seed(8, struct.pack("<q", 1) + b"extra"),
            "binary longer than announced",
            "add up to 8",
        ),
        _named(_binary_seed(16, struct.pack("<q", 1)), "binary_data_size past the end"),
        _named(_binary_seed(4, b"\0" * 4), "binary size off for the shape"),
        _named(_binary_seed(8, struct.pack("<q", 1), length=10**6), "header length past the end"),
        _named(_binary_seed(8, struct.pack("<q", 1), length=5), "header length mid-JSON"),
        Case(
            "header length not a number",
            _infer(_seed([1])),
            headers=(("Inference-Header-Content-Length", "x"),),
        ),
        _named(_binary_seed(-8, b""), "negative binary_data_size"),
        _named(_binary_seed(8, struct.pack("<q", -5)), "negative binary seed"),
        _named(_binary(binary_latent, nan_latent), "NaN in a binary latent", "finite float32"),
        # Routes, methods, models, sizes.
        Case("unknown model", _infer(_seed([1])), 404, path="/v2/models/nope/infer"),
        Case(
            "unknown version",
            _infer(_seed([1])),
            404,
            path=f"/v2/models/{TINY}/versions/9/infer",
        ),
        Case("unknown v2 route", b"", 404, path="/v2/repository/index"),
        Case("GET on infer", b"", 405, method="GET"),
        Case("POST on metadata", b"{}", 405, path=f"/v2/models/{TINY}"),
        Case("body over the limit", b"[" * (MAX_BODY_BYTES + 1), 413),
    ]


def _check_rest(name: str, response: httpx.Response, status: int, latency_s: float) -> None:
    assert response.status_code == status, (name, response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), (name, body)
    assert 10 <= len(body["error"]) <= 600, (name, body["error"])
    assert latency_s < SLOW_ANSWER_S, (name, latency_s)


def _grpc_cases() -> list[tuple[str, bytes, str]]:
    """(name, serialized ModelInferRequest, expected status code name)."""

    def request(**fields: object) -> object:
        message = service_pb2.ModelInferRequest(model_name=TINY, **fields)
        return message

    def seed_tensor(shape: list[int], datatype: str = "INT64") -> object:
        return service_pb2.ModelInferRequest.InferInputTensor(
            name="seed", datatype=datatype, shape=shape
        )

    valid = request(inputs=[seed_tensor([1])], raw_input_contents=[struct.pack("<q", 3)])
    whole = valid.SerializeToString()
    nan_row = np.zeros(LATENT_DIM, np.float32)
    nan_row[3] = np.nan
    latent = service_pb2.ModelInferRequest.InferInputTensor(
        name="latent", datatype="FP32", shape=[1, LATENT_DIM]
    )
    both = seed_tensor([1])
    both.contents.int64_contents.append(1)
    cases = [
        ("truncated message", whole[: len(whole) - 3], "INVALID_ARGUMENT"),
        ("garbage bytes", b"\xff" * 40, "INVALID_ARGUMENT"),
        ("no inputs", request().SerializeToString(), "INVALID_ARGUMENT"),
        (
            "seed as FP32",
            request(
                inputs=[seed_tensor([1], "FP32")], raw_input_contents=[b"\0" * 4]
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "raw contents count off",
            request(
                inputs=[seed_tensor([1])], raw_input_contents=[b"\0" * 8, b"\0" * 8]
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "raw size off",
            request(inputs=[seed_tensor([2])], raw_input_contents=[b"\0" * 8]).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "contents and raw",
            request(inputs=[both], raw_input_contents=[b"\0" * 8]).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "NaN latent",
            request(inputs=[latent], raw_input_contents=[nan_row.tobytes()]).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "negative seed",
            request(
                inputs=[seed_tensor([1])], raw_input_contents=[struct.pack("<q", -1)]
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "over the item limit",
            request(
                inputs=[seed_tensor([MAX_ITEMS + 1])],
                raw_input_contents=[b"\0" * 8 * (MAX_ITEMS + 1)],
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "unknown output",
            request(
                inputs=[seed_tensor([1])],
                raw_input_contents=[b"\0" * 8],
                outputs=[service_pb2.ModelInferRequest.InferRequestedOutputTensor(name="mask")],
            ).SerializeToString(),
            "INVALID_ARGUMENT",
        ),
        (
            "unknown model",
            service_pb2.ModelInferRequest(
                model_name="nope", inputs=[seed_tensor([1])], raw_input_contents=[b"\0" * 8]
            ).SerializeToString(),
            "NOT_FOUND",
        ),
        (
            "message over the size limit",
            request(
                inputs=[seed_tensor([1])], raw_input_contents=[b"\0" * (MAX_BODY_BYTES + 1)]
            ).SerializeToString(),
            "RESOURCE_EXHAUSTED",
        ),
    ]
    return cases


async def test_hostile_v2_requests_get_quick_protocol_errors(serve: Launcher) -> None:
    grpc_port = free_port()
    server = serve(
        max_body_bytes=MAX_BODY_BYTES,
        max_items_per_request=MAX_ITEMS,
        grpc_port=grpc_port,
        log_level="warning",
    )
    before = server.metrics()
    rest_cases = _rest_cases()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        for case in rest_cases:
            started = time.monotonic()
            response = await http.request(
                case.method, case.path, content=case.body, headers=dict(case.headers)
            )
            _check_rest(case.name, response, case.status, time.monotonic() - started)
            assert case.says in response.json()["error"], (case.name, response.text)

    grpc_cases = _grpc_cases()
    with grpc.insecure_channel(f"{HOST}:{grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for name, payload, code in grpc_cases:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                infer(payload, timeout=SLOW_ANSWER_S)
            error = caught.value
            assert error.code().name == code, (name, error.code(), error.details())
            assert 10 <= len(error.details() or "") <= 600, (name, error.details())
            assert time.monotonic() - started < SLOW_ANSWER_S, name
        # The server is still whole: a good call after all of that.
        good = service_pb2.ModelInferRequest(
            model_name=TINY,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="seed", datatype="INT64", shape=[1]
                )
            ],
            raw_input_contents=[struct.pack("<q", 1)],
        )
        answer = service_pb2.ModelInferResponse.FromString(
            infer(good.SerializeToString(), timeout=SLOW_ANSWER_S)
        )
        assert [output.name for output in answer.outputs] == ["image", "png"]

    after = server.metrics()
    images = metric_sum(after, "imagegen_images_generated_total") - metric_sum(
        before, "imagegen_images_generated_total"
    )
    assert images == 1  # only the good call reached the model
    assert metric_sum(after, "imagegen_protocol_requests_total", status="500") == 0
    assert metric_sum(after, "imagegen_protocol_requests_total", status="INTERNAL") == 0
    assert not warnings_in(server.log()), warnings_in(server.log())
    record(
        "hostile_input_v2",
        rest_cases=len(rest_cases),
        grpc_cases=len(grpc_cases),
        images_computed=images,
    )
