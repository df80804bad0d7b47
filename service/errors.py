"""Errors named after their condition, each carrying its HTTP status, and their one JSON shape.

Every error body is `{"error": {"type": "...", "message": "..."}}`. The batcher and the runtime
raise their own transport-free exceptions; the data plane translates them into these. Nothing
here imports a web framework: the HTTP front ends (service/api) turn these into responses.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

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


class BatcherFailed(ServiceError):
    """The model's batch scheduler broke; waiting requests are failed, and it is restarted."""

    status_code = 500
    error_type = "batcher_failed"


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


def quoted(value: str, limit: int = 64) -> str:
    """`repr(value)`, cut to `limit` characters: messages name bad input without echoing it all."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f" (and {len(value) - limit} more characters)"


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


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


def error_json(error_type: str, message: str) -> bytes:
    """The error body as bytes, exactly as the JSON responses of every front end encode it."""
    return json.dumps(
        error_body(error_type, message), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode("utf-8")


def is_rejection(status_code: int) -> bool:
    """Client errors and load shedding (503, 504) count as rejections; other 5xx do not."""
    return status_code < 500 or status_code in (503, 504)


def v2_error_json(message: str) -> bytes:
    """The Open Inference Protocol's error body, `{"error": "<message>"}`, for every /v2 path."""
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
