"""A full queue over the Open Inference Protocol: REST answers 503 with Retry-After and the
protocol's error body, gRPC answers UNAVAILABLE with a `retry-after` trailer; v1 and v2
requests share one queue (the same batcher), so either protocol fills it for both."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.reliability.conftest import SLOW, Launcher
from tests.reliability.grpc_requests import seed_infer_request
from tests.reliability.harness import HOST, free_port, warnings_in

grpc = pytest.importorskip("grpc")
grpc_aio = pytest.importorskip("grpc.aio")

QUEUE_IMAGES = 16
ROWS = 8


def _rest_body(seed: int) -> bytes:
    tensor = {"name": "seed", "datatype": "INT64", "shape": [ROWS]}
    tensor["data"] = list(range(seed, seed + ROWS))
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "png"}]}).encode()


def _grpc_body(seed: int) -> bytes:
    return seed_infer_request(SLOW, seed, ROWS)


async def test_a_full_queue_is_503_over_rest_and_unavailable_over_grpc(serve: Launcher) -> None:
    grpc_port = free_port()
    server = serve(
        grpc_port=grpc_port,
        max_queue_size=QUEUE_IMAGES,
        max_items_per_request=ROWS,
        max_batch_size=4,
        log_level="warning",
    )
    rest_statuses: list[tuple[int, dict[str, str], bytes]] = []
    grpc_codes: list[tuple[grpc.StatusCode, str | None]] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=60) as http,
        grpc_aio.insecure_channel(f"{HOST}:{grpc_port}") as channel,
    ):
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def rest_call(index: int) -> None:
            response = await http.post(f"/v2/models/{SLOW}/infer", content=_rest_body(index * 100))
            rest_statuses.append((response.status_code, dict(response.headers), response.content))

        async def grpc_call(index: int) -> None:
            call = infer(_grpc_body(index * 100 + 50), timeout=60)
            try:
                await call
                grpc_codes.append((grpc.StatusCode.OK, None))
            except grpc.aio.AioRpcError as error:
                trailers = dict(error.trailing_metadata() or ())
                grpc_codes.append((error.code(), trailers.get("retry-after")))

        calls = [rest_call(i) for i in range(12)] + [grpc_call(i) for i in range(12)]
        await asyncio.gather(*calls)

    ok_rest = [entry for entry in rest_statuses if entry[0] == 200]
    shed_rest = [entry for entry in rest_statuses if entry[0] == 503]
    assert len(ok_rest) + len(shed_rest) == len(rest_statuses), [s for s, _, _ in rest_statuses]
    assert shed_rest, [s for s, _, _ in rest_statuses]
    for _, headers, body in shed_rest:
        assert headers["retry-after"] == "1"
        message = json.loads(body)["error"]
        assert isinstance(message, str) and "busy" in message
    codes = [code for code, _ in grpc_codes]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert grpc.StatusCode.UNAVAILABLE in codes, codes
    # Whichever protocol reached the queue first was served: one queue for both.
    assert ok_rest or grpc.StatusCode.OK in codes
    assert all(after == "1" for code, after in grpc_codes if code is grpc.StatusCode.UNAVAILABLE)
    assert not warnings_in(server.log()), warnings_in(server.log())
