"""The Open Inference Protocol's `GRPCInferenceService` on grpc.aio, in the server's own event
loop, over the same data plane, batchers and limits as HTTP.

Requests arrive as bytes and are parsed here (not by grpc), so a message that is not valid
protobuf gets INVALID_ARGUMENT with a reason rather than grpc's generic error. The messages
come from service/v2/protocol (generated from the protocol's .proto and committed). They
live in protobuf's default pool under the protocol's package `inference`, as tritonclient's
do: one process cannot import both (tests run the server in a process of its own).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service.auth import check_bearer
from service.dataplane import DataPlane
from service.errors import (
    RETRY_AFTER_S,
    InvalidInput,
    ModelNotFound,
    ServiceError,
    is_rejection,
)
from service.metrics import Metrics
from service.settings import Settings
from service.v2.codec import RawInput, check_outputs, output_bytes
from service.v2.inference import (
    find_model,
    infer,
    model_metadata,
    model_ready,
    server_metadata,
)
from service.v2.protocol import open_inference_grpc_pb2 as pb

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})  # like /v2/health/*: no API key

# The HTTP status each service error carries, as the gRPC code that means the same. A batch
# over the item limit is INVALID_ARGUMENT (as Triton answers a batch over its maximum): the
# request must change, so it is not one to retry; a message over max_body_bytes is grpc's own
# RESOURCE_EXHAUSTED.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: ServiceError) -> grpc.StatusCode:
    return _CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


class GrpcBindError(Exception):
    """The gRPC port cannot be bound."""


Method = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]


class InferenceService:
    """The six RPCs; each parses its request, answers, or aborts with the mapped code."""

    def __init__(self, dataplane: DataPlane, metrics: Metrics) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        key = dataplane.settings.api_key
        self.api_key = key.get_secret_value().encode() if key is not None else None

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, tuple[Method, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyResponse),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataResponse),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataResponse),
            "ModelInfer": (self.model_infer, pb.ModelInferResponse),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._wrap(name, method),
                    request_deserializer=None,  # bytes: parsed in the method
                    response_serializer=response.SerializeToString,
                )
                for name, (method, response) in methods.items()
            },
        )

    def _wrap(self, name: str, method: Method) -> Method:
        requests = self.metrics.protocol_requests
        latency = self.metrics.grpc_request_latency_seconds.labels(method=name)
        needs_key = self.api_key is not None and name not in OPEN_METHODS

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                if needs_key:
                    self._check_key(context)
                return await method(request, context)
            except ServiceError as error:
                code = status_code(error)
                if is_rejection(error.status_code):
                    self.metrics.rejections.labels(reason=error.error_type).inc()
                elif code is grpc.StatusCode.INTERNAL:
                    logger.error("gRPC %s failed: %s", name, error.message)
                if error.retry_after_s is not None:
                    context.set_trailing_metadata((("retry-after", str(RETRY_AFTER_S)),))
                await context.abort(code, error.message)
            except Exception as error:
                if isinstance(error, grpc.aio.AbortError):
                    raise
                code = grpc.StatusCode.INTERNAL
                logger.exception("unexpected error in gRPC %s", name)
                await context.abort(code, "internal server error")
            finally:
                requests.labels(protocol="grpc", status=code.name).inc()
                latency.observe(time.perf_counter() - started)

        return call

    def _check_key(self, context: grpc.aio.ServicerContext) -> None:
        assert self.api_key is not None
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        check_bearer(
            header.encode("latin-1", "replace"),
            self.api_key,
            "send the metadata 'authorization: Bearer <key>'",
        )

    @staticmethod
    def _parse(message_type: Any, raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except DecodeError as error:
            name = message_type.DESCRIPTOR.name
            raise InvalidInput(f"the request is not a valid {name} message: {error}") from None

    # -- the RPCs ------------------------------------------------------------------------------

    async def server_live(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        self._parse(pb.ServerLiveRequest, raw)
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        self._parse(pb.ServerReadyRequest, raw)
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def model_ready(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        """ready=false for an unknown model or version too: the answer is the boolean (REST
        says 404, which its clients read as false as well)."""
        request = self._parse(pb.ModelReadyRequest, raw)
        try:
            served = find_model(self.dataplane, request.name, request.version or None)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=model_ready(self.dataplane, served))

    async def server_metadata(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        self._parse(pb.ServerMetadataRequest, raw)
        return pb.ServerMetadataResponse(**server_metadata())

    async def model_metadata(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        request = self._parse(pb.ModelMetadataRequest, raw)
        served = find_model(self.dataplane, request.name, request.version or None)
        return pb.ModelMetadataResponse(**model_metadata(served))

    async def model_infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        request = self._parse(pb.ModelInferRequest, raw)
        self.dataplane.serving(request.model_name)
        raw_contents = request.raw_input_contents
        if raw_contents and len(raw_contents) != len(request.inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(raw_contents)} entries for "
                f"{len(request.inputs)} inputs (one per input, in order)"
            )
        inputs: list[RawInput] = []
        for index, tensor in enumerate(request.inputs):
            shape = list(tensor.shape)
            if any(d < 0 for d in shape):
                raise InvalidInput(f"input {tensor.name!r}: shape {shape} has a negative dimension")
            if raw_contents:
                if tensor.HasField("contents"):
                    raise InvalidInput(
                        f"input {tensor.name!r} has both contents and raw_input_contents"
                    )
                inputs.append(
                    RawInput(tensor.name, tensor.datatype, shape, raw=raw_contents[index])
                )
                continue
            contents = tensor.contents
            values = (
                contents.fp32_contents if tensor.datatype == "FP32" else contents.int64_contents
            )
            inputs.append(RawInput(tensor.name, tensor.datatype, shape, values=list(values)))
        outputs = check_outputs([output.name for output in request.outputs], request.model_name)
        served, results = await infer(
            self.dataplane, request.model_name, request.model_version or None, inputs, outputs
        )
        response = pb.ModelInferResponse(
            model_name=served.name, model_version=served.card.version, id=request.id
        )
        for output in results:
            response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
            response.raw_output_contents.append(output_bytes(output))
        return response


class GrpcServer:
    """The gRPC server of one process: started before the models load (so ServerLive and
    ServerReady answer while they do), stopped after HTTP has drained."""

    def __init__(self, settings: Settings, dataplane: DataPlane, metrics: Metrics) -> None:
        self.settings = settings
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            # With --workers N every worker binds the port (the kernel spreads connections);
            # a single process refuses a port another server holds.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
        self.server = grpc.aio.server(options=options)
        self.server.add_generic_rpc_handlers((InferenceService(dataplane, metrics).handler(),))
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and start; the bound port (GrpcBindError when it cannot be bound)."""
        host = self.settings.host
        address = (
            f"[{host}]:{self.settings.grpc_port}"
            if ":" in host
            else f"{host}:{self.settings.grpc_port}"
        )
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as error:
            raise GrpcBindError(f"cannot listen for gRPC on {address}: {error}") from None
        if self.port == 0:
            raise GrpcBindError(f"cannot listen for gRPC on {address}")
        await self.server.start()
        self._loop = asyncio.get_running_loop()
        logger.info("gRPC (Open Inference Protocol) on %s", address)
        return self.port

    def stop_soon(self, grace_s: float) -> None:
        """From a signal handler: start stopping on the server's loop (SIGTERM stops gRPC
        taking calls at once, as uvicorn stops taking connections, not after HTTP drained)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping, grace_s)

    def _stopping(self, grace_s: float) -> asyncio.Task[None]:
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self.server.stop(grace_s))
        return self._stop_task

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls (UNAVAILABLE); calls in flight get `grace_s` to finish."""
        await self._stopping(grace_s)
