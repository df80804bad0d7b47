"""SIGTERM with gRPC calls in flight: they are answered, new calls are refused at once (not
after HTTP has drained), and the process exits 0."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.reliability.conftest import SLOW, Launcher
from tests.reliability.grpc_requests import seed_infer_request
from tests.reliability.harness import HOST, free_port, metric_sum, warnings_in

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

GRACE_S = 20.0
IN_FLIGHT = 12
ROWS = 16  # images per gRPC call: about a second of the slow model's work in all


def _infer_request(seed: int) -> bytes:
    return seed_infer_request(SLOW, seed, ROWS)


def test_sigterm_answers_grpc_calls_in_flight_and_refuses_new_ones(serve: Launcher) -> None:
    grpc_port = free_port()
    server = serve(
        grpc_port=grpc_port,
        shutdown_grace_s=GRACE_S,
        max_batch_size=8,
        max_items_per_request=256,
        max_queue_size=1024,
    )
    channel = grpc.insecure_channel(f"{HOST}:{grpc_port}")
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    infer(_infer_request(0), timeout=60)  # warm: the channel is connected
    answers: list[object] = []

    def call(index: int) -> None:
        try:
            answers.append(
                service_pb2.ModelInferResponse.FromString(
                    infer(_infer_request(1000 * index), timeout=60)
                )
            )
        except grpc.RpcError as error:
            answers.append(error.code())

    http_answer: list[int] = []

    def http_call() -> None:  # keeps uvicorn draining HTTP for a while after the signal
        response = httpx.post(
            f"{server.base_url}/v1/models/{SLOW}/generate/batch",
            json={"count": 256, "seed": 5},
            headers={"accept": "application/json"},
            timeout=60,
        )
        http_answer.append(response.status_code)

    http_caller = threading.Thread(target=http_call)
    http_caller.start()
    deadline = time.monotonic() + 30
    while metric_sum(server.metrics(), "imagegen_queue_depth_images", model=SLOW) == 0:
        assert time.monotonic() < deadline, "the HTTP request never reached the queue"
        time.sleep(0.01)
    callers = [threading.Thread(target=call, args=(i,)) for i in range(1, IN_FLIGHT + 1)]
    for caller in callers:
        caller.start()
    callers.append(http_caller)
    time.sleep(0.1)  # all sent; the slow model works through them a batch at a time
    signalled = time.monotonic()
    server.terminate()
    time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as refused:
        infer(_infer_request(99), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    refused_after_s = time.monotonic() - signalled
    for caller in callers:
        caller.join(60)
    drained_after_s = time.monotonic() - signalled
    assert http_answer == [200]
    # Refused while the accepted work was still being answered, not after it.
    assert refused_after_s < drained_after_s / 2, (refused_after_s, drained_after_s)
    assert len(answers) == IN_FLIGHT
    for answer in answers:
        assert not isinstance(answer, grpc.StatusCode), answer
        assert [output.name for output in answer.outputs] == ["image", "png"]  # type: ignore[attr-defined]
    assert server.process.wait(GRACE_S * 2) == 0
    channel.close()
    assert not warnings_in(server.log()), warnings_in(server.log())
