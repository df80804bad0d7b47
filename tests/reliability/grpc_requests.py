"""Raw gRPC ModelInfer requests for the reliability tier (tritonclient's message classes)."""

from __future__ import annotations

import struct

import pytest

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")


def seed_infer_request(model: str, first_seed: int, rows: int) -> bytes:
    """A serialized ModelInferRequest for `rows` consecutive seeds from `first_seed`."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="seed", datatype="INT64", shape=[rows]
    )
    request = service_pb2.ModelInferRequest(
        model_name=model,
        inputs=[tensor],
        raw_input_contents=[struct.pack(f"<{rows}q", *range(first_seed, first_seed + rows))],
    )
    return request.SerializeToString()  # type: ignore[no-any-return]
