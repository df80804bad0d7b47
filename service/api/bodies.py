"""Request bodies: reading them under the size limit, and validating JSON against a schema.

Shared by the FastAPI routes and the raw ASGI fast path, so both answer bad bodies alike.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.types import Receive

from service.errors import (
    ClientClosedRequest,
    InvalidInput,
    MalformedJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
    describe_validation_errors,
)

BodyT = TypeVar("BodyT", bound=BaseModel)


def body_too_large(max_body_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over the limit of {max_body_bytes} bytes")


async def read_body(receive: Receive, max_body_bytes: int) -> bytes:
    """The whole body; 413 as soon as it passes `max_body_bytes`, 499 if the client leaves."""
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientClosedRequest("the client closed the connection mid-body")
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_body_bytes:
            raise body_too_large(max_body_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def parse_json(raw: bytes, content_type: str | None, schema: type[BodyT]) -> BodyT:
    """Validate a JSON body against `schema`: 400 when it is not JSON, 415 when labelled as
    something else (no Content-Type is taken as JSON, an empty body as `{}`), 422 when invalid.

    Bodies are parsed here rather than by FastAPI so malformed JSON gets its own status and
    NaN or Infinity literals reach our float32 checks.
    """
    blank = not raw.strip()
    if not blank and content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {content_type[:100]!r}"
        )
    try:
        return schema.model_validate_json(b"{}" if blank else raw)
    except ValidationError as error:
        errors = error.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise MalformedJSON(f"request body is not valid JSON: {errors[0]['msg']}") from None
        raise InvalidInput(describe_validation_errors(errors)) from None
