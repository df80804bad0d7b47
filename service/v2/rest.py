"""The Open Inference Protocol's REST routes, answered on the raw ASGI fast path (api/fast.py).

`GET /v2`, `GET /v2/models/{m}[/versions/{v}]`, `GET .../ready` and `POST .../infer`; the
health routes `/v2/health/{live,ready}` stay with FastAPI (open, beside /healthz and /readyz).
The fast path does the API key, the body limit, the metrics and the error bodies (the
protocol's `{"error": "..."}` for every /v2 path); these handlers only answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope

from service.api.bodies import read_body
from service.api.disconnect import cancel_on_disconnect
from service.api.fast import Reply
from service.dataplane import DataPlane, Phase
from service.errors import NotReady, ServiceError, ShuttingDown, quoted
from service.v2.codec import check_outputs, parse_rest_infer, rest_infer_response
from service.v2.inference import (
    find_model,
    infer,
    model_metadata,
    model_ready,
    server_metadata,
)

SERVER_ROUTE = "/v2"
MODEL_ROUTE = "/v2/models/{model}"
MODEL_VERSION_ROUTE = "/v2/models/{model}/versions/{version}"
READY_ROUTE = "/v2/models/{model}/ready"
READY_VERSION_ROUTE = "/v2/models/{model}/versions/{version}/ready"
INFER_ROUTE = "/v2/models/{model}/infer"
INFER_VERSION_ROUTE = "/v2/models/{model}/versions/{version}/infer"
UNMATCHED = "unmatched"  # as the HTTP metrics label routes nobody declared
_READ = ("GET", "HEAD")
JSON = b"application/json"
BINARY = b"application/octet-stream"


class MethodNotAllowed(ServiceError):
    status_code = 405
    error_type = "method_not_allowed"

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class RouteNotFound(ServiceError):
    status_code = 404
    error_type = "not_found"


Answer = Reply
V2Handler = Callable[[Scope, Receive, dict[bytes, bytes], str, str], Awaitable[Reply]]


def _json(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class V2Rest:
    """Matches the /v2 paths (other than health) and answers them."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.max_body_bytes = dataplane.settings.max_body_bytes

    def match(self, path: str, method: str) -> tuple[str, V2Handler, str, str] | None:
        """(route template, handler, model, version) for a /v2 path; None for health and
        anything outside /v2 (FastAPI answers those)."""
        if path in ("/v2", "/v2/"):
            return self._allow(SERVER_ROUTE, self._server, method, _READ, "", "")
        if not path.startswith("/v2/") or path.startswith("/v2/health/"):
            return None
        parts = path[len("/v2/") :].split("/")
        if len(parts) < 2 or parts[0] != "models" or not parts[1]:
            return UNMATCHED, self._not_found, "", ""
        model, rest = parts[1], parts[2:]
        version = ""
        templates = (MODEL_ROUTE, READY_ROUTE, INFER_ROUTE)
        if len(rest) >= 2 and rest[0] == "versions" and rest[1]:
            version, rest = rest[1], rest[2:]
            templates = (MODEL_VERSION_ROUTE, READY_VERSION_ROUTE, INFER_VERSION_ROUTE)
        if not rest:
            return self._allow(templates[0], self._metadata, method, _READ, model, version)
        if rest == ["ready"]:
            return self._allow(templates[1], self._ready, method, _READ, model, version)
        if rest == ["infer"]:
            return self._allow(templates[2], self._infer, method, ("POST",), model, version)
        return UNMATCHED, self._not_found, "", ""

    def _allow(
        self,
        template: str,
        handler: V2Handler,
        method: str,
        allowed: tuple[str, ...],
        model: str,
        version: str,
    ) -> tuple[str, V2Handler, str, str]:
        if method in allowed:
            return template, handler, model, version

        async def not_allowed(
            scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, _: str
        ) -> Answer:
            raise MethodNotAllowed(
                f"method {quoted(scope['method'])} is not allowed on {scope['path']}", allowed
            )

        return template, not_allowed, model, version

    # -- the routes --------------------------------------------------------------------------

    async def _not_found(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, _: str
    ) -> Answer:
        raise RouteNotFound(f"no route {scope['method']} {quoted(scope['path'])}")

    async def _server(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, _: str
    ) -> Answer:
        return Reply(200, [(b"content-type", JSON)], _json(server_metadata()))

    async def _metadata(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, version: str
    ) -> Answer:
        served = find_model(self.dataplane, model, version)
        return Reply(200, [(b"content-type", JSON)], _json(model_metadata(served)))

    async def _ready(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, version: str
    ) -> Answer:
        """200 when the model takes requests; 503 (with Retry-After) while the service starts,
        drains or restarts the model's scheduler; 404 for an unknown model or version."""
        dataplane = self.dataplane
        if dataplane.phase is Phase.STARTING:
            raise NotReady("models are still loading")
        served = find_model(dataplane, model, version)
        if dataplane.phase is not Phase.READY:
            raise ShuttingDown("the service is shutting down")
        if not model_ready(dataplane, served):
            raise NotReady(f"model {served.name} is not ready: its batch scheduler is restarting")
        body = {"name": served.name, "version": served.card.version, "ready": True}
        return Reply(200, [(b"content-type", JSON)], _json(body))

    async def _infer(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, version: str
    ) -> Answer:
        self.dataplane.serving(model)  # 404 or 503 before the body is read
        raw = await read_body(receive, self.max_body_bytes)
        request = parse_rest_infer(raw, headers.get(b"inference-header-content-length"))
        outputs = check_outputs(request.outputs, model)
        binary = request.binary_outputs
        if not outputs and request.binary_default:
            binary = frozenset({"image", "png"})
        served, results = await cancel_on_disconnect(
            receive, infer(self.dataplane, model, version, request.inputs, outputs), scope
        )
        body, header_length = rest_infer_response(
            served.name, served.card.version, request.id, results, binary
        )
        if header_length is None:
            return Reply(200, [(b"content-type", JSON)], body)
        return Reply(
            200,
            [
                (b"content-type", BINARY),
                (b"inference-header-content-length", str(header_length).encode()),
            ],
            body,
        )
