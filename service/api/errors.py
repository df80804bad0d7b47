"""The HTTP face of the service errors: one handler gives every error the same JSON body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from service.errors import (
    InvalidInput,
    ServiceError,
    describe_validation_errors,
    error_body,
    is_rejection,
)

logger = logging.getLogger(__name__)

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


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.error_type, exc.message), status_code=exc.status_code, headers=exc.headers
    )


def _count_rejection(request: Request, error_type: str, status_code: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and is_rejection(status_code):
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
