"""Request dependencies as `Annotated` aliases: the data plane, the model, the parsed body.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in a
worker thread, and two such hops per request cost more than the rest of the routing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from service.api.bodies import BodyT, parse_json
from service.dataplane import DataPlane, ServedModel
from service.errors import ClientClosedRequest
from service.settings import Settings


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


async def parse_body(request: Request, schema: type[BodyT]) -> BodyT:
    """The request's JSON body validated against `schema` (see `bodies.parse_json`)."""
    try:
        raw = await request.body()
    except ClientDisconnect:
        # Not a server fault: the client hung up half-way through its body.
        raise ClientClosedRequest("the client closed the connection mid-body") from None
    return parse_json(raw, request.headers.get("content-type"), schema)


def openapi_body(schema: type[BaseModel]) -> dict[str, object]:
    """OpenAPI text for a body that `parse_body` reads by hand."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }
