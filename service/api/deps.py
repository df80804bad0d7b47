"""Request dependencies as `Annotated` aliases: the data plane, the model, the parsed body.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in a
worker thread, and two such hops per request cost more than the rest of the routing.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service.dataplane import DataPlane, ServedModel
from service.errors import (
    ClientClosedRequest,
    InvalidInput,
    MalformedJSON,
    UnsupportedMediaType,
    describe_validation_errors,
)
from service.settings import Settings

BodyT = TypeVar("BodyT", bound=BaseModel)


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_known_model(model: str, dataplane: DataPlaneDep) -> ServedModel:
    return dataplane.find(model)


async def get_serving_model(model: str, dataplane: DataPlaneDep) -> ServedModel:
    return dataplane.serving(model)


KnownModelDep = Annotated[ServedModel, Depends(get_known_model)]
ServingModelDep = Annotated[ServedModel, Depends(get_serving_model)]


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def parse_body(request: Request, schema: type[BodyT]) -> BodyT:
    """Validate the JSON body against `schema`: 400 when it is not JSON, 415 when labelled as
    something else (no Content-Type is taken as JSON), 422 when invalid.

    The body is parsed here rather than by FastAPI so malformed JSON gets its own status and
    NaN or Infinity literals reach our float32 checks.
    """
    try:
        raw = await request.body()
    except ClientDisconnect:
        # Not a server fault: the client hung up half-way through its body.
        raise ClientClosedRequest("the client closed the connection mid-body") from None
    content_type = request.headers.get("content-type")
    if raw.strip() and content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {content_type[:100]!r}"
        )
    try:
        return schema.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as error:
        errors = error.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            raise MalformedJSON(f"request body is not valid JSON: {errors[0]['msg']}") from None
        raise InvalidInput(describe_validation_errors(errors)) from None


def openapi_body(schema: type[BaseModel]) -> dict[str, object]:
    """OpenAPI text for a body that `parse_body` reads by hand."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }
