"""The hot single-image routes as raw ASGI handlers, served ahead of FastAPI's stack.

POST /v1/models/{model}/generate and GET/HEAD /v1/models/{model}/images/{seed}.png carry
most of the traffic, and on them FastAPI's middleware, routing, dependency solving and
Response classes cost several times what the model does per image (profiled with py-spy:
about half of the event loop's time per request). Here each request is one coroutine:
the API key, the body limit and the metrics done inline, the body read and validated once
with the same pydantic schemas, the images from the data plane, and the answer written as
two ASGI messages.

FastAPI still declares both routes (OpenAPI is generated from those declarations, unchanged),
and their endpoints answer through the same handlers (`FastPath.reply`), so there is one
implementation whichever way a request arrives. Every behaviour is kept: the error contract
and its bodies, the API key, the body limit, deadlines, disconnects, metrics, ETags, bytes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Receive, Scope, Send

from service.api.bodies import body_too_large, parse_json, read_body
from service.api.disconnect import cancel_on_disconnect
from service.api.negotiation import negotiate
from service.api.schemas import MAX_SCALE, GenerateRequest, GenerateResponse
from service.auth import check_bearer
from service.dataplane import DataPlane, ServedModel, parse_seed, random_seed
from service.errors import (
    InvalidInput,
    ServiceError,
    describe_validation_errors,
    error_json,
    is_rejection,
    v2_error_json,
)
from service.metrics import Metrics, method_label

logger = logging.getLogger(__name__)

GENERATE_ROUTE = "/v1/models/{model}/generate"
IMAGE_ROUTE = "/v1/models/{model}/images/{seed}.png"
PNG = "image/png"
JSON = "application/json"
IMMUTABLE = "public, max-age=31536000, immutable"
# With an API key, a shared cache must not hand an image to a client without the key.
PRIVATE_IMMUTABLE = "private, max-age=31536000, immutable"
_PREFIX = "/v1/models/"
_GENERATE_TYPES = (PNG, JSON)
_IMAGE_TYPES = (PNG,)
_WANTED_HEADERS = frozenset(
    {
        b"authorization",
        b"content-length",
        b"content-type",
        b"accept",
        b"if-none-match",
        b"inference-header-content-length",
    }
)

Headers = list[tuple[bytes, bytes]]


class Reply:
    """What a handler answers: status, headers (without Content-Length) and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ImageQuery(BaseModel):
    """The query of GET images/{seed}.png (validated as FastAPI validates its parameters)."""

    model_config = ConfigDict(extra="ignore")

    truncation: float = Field(default=1.0, gt=0, le=1)
    scale: int = Field(default=1, ge=1, le=MAX_SCALE)
    class_: str | None = Field(default=None, alias="class", min_length=1, max_length=200)


def _request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The headers the hot routes read: the first of each, repeated If-None-Match combined."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED_HEADERS:
            if name not in found:
                found[name] = value
            elif name == b"if-none-match":  # RFC 9110 5.3: one comma-separated list
                found[name] += b", " + value
    return found


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    return "*" in candidates or etag in (tag.removeprefix("W/") for tag in candidates)


Handler = Callable[[Scope, Receive, dict[bytes, bytes], str, str], Awaitable[Reply]]
# More raw routes outside /v1/models/ (the Open Inference Protocol's /v2): (path, method) ->
# (route template, handler, model, argument), or None.
RouteMatcher = Callable[[str, str], "tuple[str, Handler, str, str] | None"]
V2_PREFIX = "/v2"


class FastPath:
    """Matches and serves the hot routes; everything else goes on to FastAPI."""

    def __init__(
        self, dataplane: DataPlane, metrics: Metrics, more_routes: RouteMatcher | None = None
    ) -> None:
        settings = dataplane.settings
        self.more_routes = more_routes
        self.dataplane = dataplane
        self.metrics = metrics
        key = settings.api_key
        self.api_key = key.get_secret_value().encode() if key is not None else None
        self.cache_control = (PRIVATE_IMMUTABLE if key is not None else IMMUTABLE).encode()
        self.max_body_bytes = settings.max_body_bytes
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}
        self._model_headers: dict[str, Headers] = {}

    # -- dispatch ----------------------------------------------------------------------------

    def match(self, scope: Scope) -> tuple[str, Handler, str, str] | None:
        """(route template, handler, model, seed text) for a hot route, else None."""
        path: str = scope["path"]
        if not path.startswith(_PREFIX):
            more = self.more_routes
            return more(path, scope["method"]) if more is not None else None
        parts = path[len(_PREFIX) :].split("/")
        method = scope["method"]
        if len(parts) == 2 and parts[1] == "generate" and parts[0] and method == "POST":
            return GENERATE_ROUTE, self._generate, parts[0], ""
        if (
            len(parts) == 3
            and parts[1] == "images"
            and parts[0]
            and len(parts[2]) > 4
            and parts[2].endswith(".png")
            and method in ("GET", "HEAD")
        ):
            return IMAGE_ROUTE, self._image, parts[0], parts[2][:-4]
        return None

    async def reply(self, scope: Scope, receive: Receive) -> Reply:
        """The handler's answer for a request FastAPI routed to a declared hot route (its
        middleware then does the key, the limit and the metrics); errors are raised."""
        found = self.match(scope)
        if found is None:
            raise RuntimeError(f"{scope['method']} {scope['path']} is not a fast-path route")
        _, handler, model, argument = found
        return await handler(scope, receive, _request_headers(scope), model, argument)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, route: tuple[str, Handler, str, str]
    ) -> None:
        started = time.perf_counter()
        template, handler, model, argument = route
        method: str = scope["method"]
        headers = _request_headers(scope)
        try:
            if self.api_key is not None:
                check_bearer(headers.get(b"authorization"), self.api_key)
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise body_too_large(self.max_body_bytes)
            reply = await handler(scope, receive, headers, model, argument)
        except ServiceError as error:
            reply = self._error_reply(error, method, scope["path"])
        except Exception:
            logger.exception("unexpected error on %s %s", method, scope["path"])
            reply = self._error_reply(
                ServiceError("internal server error"), method, scope["path"], log=False
            )
        response_headers = reply.headers
        if reply.status != 304:
            response_headers.append((b"content-length", str(len(reply.body)).encode()))
        await send(
            {"type": "http.response.start", "status": reply.status, "headers": response_headers}
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else reply.body})
        self._observe(template, method, reply.status, time.perf_counter() - started)

    # -- the concerns FastAPI's middleware has on other routes --------------------------------

    def _error_reply(self, error: ServiceError, method: str, path: str, log: bool = True) -> Reply:
        if is_rejection(error.status_code):
            self.metrics.rejections.labels(reason=error.error_type).inc()
        elif error.status_code >= 500 and log:
            logger.error("%s %s failed: %s", method, path, error.message)
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        if path.startswith(V2_PREFIX):
            # The Open Inference Protocol's shape; its bad request is 400 (v1 says 422).
            status = 400 if error.status_code in (415, 422) else error.status_code
            return Reply(status, headers, v2_error_json(error.message))
        return Reply(error.status_code, headers, error_json(error.error_type, error.message))

    def _observe(self, template: str, method: str, status: int, seconds: float) -> None:
        key = (template, method, status)
        observe = self._observers.get(key)
        if observe is None:
            label = method_label(method)
            counter = self.metrics.requests.labels(route=template, method=label, status=str(status))
            latency = self.metrics.request_latency_seconds.labels(route=template, method=label)
            process_requests = self.metrics.process_requests
            # The v1 templates, or the /v2 routes of `more_routes` (their unmatched ones too).
            protocol = "v1" if template.startswith("/v1/") else "v2"
            by_protocol = self.metrics.protocol_requests.labels(
                protocol=protocol, status=str(status)
            )

            def observe(seconds: float) -> None:
                counter.inc()
                by_protocol.inc()
                latency.observe(seconds)
                process_requests.inc()

            self._observers[key] = observe
        observe(seconds)

    def _headers_for(self, served: ServedModel) -> Headers:
        cached = self._model_headers.get(served.name)
        if cached is None:
            cached = [
                (b"x-model", served.name.encode()),
                (b"x-model-version", served.card.version.encode()),
            ]
            self._model_headers[served.name] = cached
        return list(cached)

    # -- the routes --------------------------------------------------------------------------

    async def _generate(
        self, scope: Scope, receive: Receive, headers: dict[bytes, bytes], model: str, _: str
    ) -> Reply:
        served = self.dataplane.serving(model)
        media_type = negotiate(_text(headers.get(b"accept")), _GENERATE_TYPES)
        raw = await read_body(receive, self.max_body_bytes)
        body = parse_json(raw, _text(headers.get(b"content-type")), GenerateRequest)
        served.check_output_size(1, body.scale)
        seed = body.seed
        # Unconditional models: no class work at all beyond this one check (hot path).
        class_index = None
        if body.class_ is not None or served.num_classes:
            class_index = served.resolve_class(body.class_)
        latents = None
        if body.latent is not None:
            latents = served.latents_from_values([body.latent])
            if served.num_classes:
                served.effective_class(None, class_index)  # 422: a latent needs a class
        elif seed is None:
            seed = random_seed()
        work = served.pngs(
            seeds=None if seed is None else [seed],
            latents=latents,
            truncation=body.truncation,
            scale=body.scale,
            classes=None if class_index is None else [class_index],
        )
        (png,) = await cancel_on_disconnect(receive, work, scope)
        reply_headers = self._headers_for(served)
        if seed is not None:
            reply_headers.append((b"x-seed", str(seed).encode()))
        class_name = None
        if served.num_classes:
            class_name = served.class_name(served.effective_class(seed, class_index))
            reply_headers.append((b"x-class", _header_text(class_name)))
        if media_type == PNG:
            reply_headers.append((b"content-type", b"image/png"))
            return Reply(200, reply_headers, png)
        image = served.card.image
        payload = GenerateResponse(
            model=served.name,
            version=served.card.version,
            seed=seed,
            width=image.width * body.scale,
            height=image.height * body.scale,
            truncation=body.truncation,
            scale=body.scale,
            png_base64=base64.b64encode(png).decode("ascii"),
        )
        reply_headers.append((b"content-type", b"application/json"))
        content = payload.model_dump(by_alias=True, exclude={"class_"})
        if class_name is not None:  # conditional models only
            content["class"] = class_name
        return Reply(200, reply_headers, _json_bytes(content))

    async def _image(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[bytes, bytes],
        model: str,
        seed_text: str,
    ) -> Reply:
        served = self.dataplane.serving(model)
        query = _image_query(scope["query_string"])
        negotiate(_text(headers.get(b"accept")), _IMAGE_TYPES)
        seed = parse_seed(seed_text)
        class_index = None
        if query.class_ is not None or served.num_classes:
            class_index = served.resolve_class(query.class_, "query parameter class")
        etag = served.image_etag(seed, query.truncation, query.scale, class_index)
        reply_headers = self._headers_for(served)
        reply_headers += [
            (b"x-seed", str(seed).encode()),
            (b"etag", etag.encode()),
            (b"cache-control", self.cache_control),
        ]
        if served.num_classes:
            name = served.class_name(served.effective_class(seed, class_index))
            reply_headers.append((b"x-class", _header_text(name)))
        if self.api_key is not None:
            reply_headers.append((b"vary", b"Authorization"))
        if etag_matches(_text(headers.get(b"if-none-match")), etag):
            return Reply(304, reply_headers)
        served.check_output_size(1, query.scale)
        work = served.pngs(
            seeds=[seed],
            truncation=query.truncation,
            scale=query.scale,
            classes=None if class_index is None else [class_index],
        )
        (png,) = await cancel_on_disconnect(receive, work, scope)
        reply_headers.append((b"content-type", b"image/png"))
        return Reply(200, reply_headers, png)


def _image_query(query_string: bytes) -> ImageQuery:
    params = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    try:
        return ImageQuery.model_validate(params)
    except ValidationError as error:
        errors = [
            {**problem, "loc": ("query", *problem.get("loc", ()))} for problem in error.errors()
        ]
        raise InvalidInput(describe_validation_errors(errors)) from None


def _header_text(text: str) -> bytes:
    """A header value: latin-1 where it can be, else percent-encoded UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return quote(text, safe=" /").encode("ascii")


def _json_bytes(content: Any) -> bytes:
    """JSON as Starlette's JSONResponse writes it."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
