"""Errors named after their condition, each carrying its HTTP status, and their one JSON shape.

Every error body is `{"error": {"type": "...", "message": "..."}}`. The batcher and the runtime
raise their own transport-free exceptions; the data plane translates them into these.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # what a 503 tells clients to wait before retrying (seconds)


class ServiceError(Exception):
    """Base of every error a client may see; subclasses fix the status and the type name."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    retry_after_s: ClassVar[int | None] = None  # sent as Retry-After (seconds) when set

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(self.retry_after_s)}


class MalformedJSON(ServiceError):
    status_code = 400
    error_type = "malformed_json"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServiceError):
    status_code = 404
    error_type = "model_not_found"


class NotAcceptable(ServiceError):
    status_code = 406
    error_type = "not_acceptable"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class TooManyItems(ServiceError):
    status_code = 413
    error_type = "too_many_items"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    error_type = "unsupported_media_type"


class InvalidInput(ServiceError):
    status_code = 422
    error_type = "invalid_input"


class ClientClosedRequest(ServiceError):
    """The client went away before its answer was ready (nginx's 499; nobody reads it)."""

    status_code = 499
    error_type = "client_closed_request"


class InferenceFailed(ServiceError):
    status_code = 500
    error_type = "inference_failed"


class QueueFull(ServiceError):
    status_code = 503
    error_type = "queue_full"
    retry_after_s = RETRY_AFTER_S


class NotReady(ServiceError):
    status_code = 503
    error_type = "not_ready"
    retry_after_s = RETRY_AFTER_S


class ShuttingDown(ServiceError):
    status_code = 503
    error_type = "shutting_down"
    retry_after_s = RETRY_AFTER_S


class DeadlineExceeded(ServiceError):
    status_code = 504
    error_type = "deadline_exceeded"


_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def quoted(value: str, limit: int = 64) -> str:
    """`repr(value)`, cut to `limit` characters: messages name bad input without echoing it all."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f" (and {len(value) - limit} more characters)"


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.error_type, exc.message), status_code=exc.status_code, headers=exc.headers
    )


def describe_validation_errors(errors: Any) -> str:
    """One line per pydantic error: `location: message`, capped so a huge bad list stays short."""
    parts = []
    for error in list(errors)[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts) or "invalid request"


def _count_rejection(request: Request, error_type: str, status_code: int) -> None:
    """Client errors and load shedding (503, 504) count as rejections; other 5xx do not."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and (status_code < 500 or status_code in (503, 504)):
        metrics.rejections.labels(reason=error_type).inc()


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    _count_rejection(request, exc.error_type, exc.status_code)
    if exc.status_code >= 500 and exc.status_code not in (503, 504):
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _count_rejection(request, InvalidInput.error_type, InvalidInput.status_code)
    return error_response(InvalidInput(describe_validation_errors(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error_type = _HTTP_TYPES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    if exc.status_code < 200 or exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    _count_rejection(request, error_type, exc.status_code)
    return JSONResponse(
        error_body(error_type, message), status_code=exc.status_code, headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one JSON shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
