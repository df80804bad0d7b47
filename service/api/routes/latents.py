"""Latent space: a seed's latent vector, and interpolation between two seeds or latents."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from service import imaging
from service.api.deps import DataPlaneDep, ServingModelDep, parse_body
from service.api.disconnect import cancel_on_disconnect
from service.api.negotiation import negotiate
from service.api.routes.images import JSON, PNG, model_headers
from service.api.schemas import (
    ErrorResponse,
    InterpolateRequest,
    InterpolateResponse,
    InterpolationFrame,
    SeedLatent,
)
from service.dataplane import (
    ServedModel,
    check_output_pixels,
    encode_gif,
    encode_grid_png,
    encode_pngs,
    parse_seed,
)
from service.interpolation import positions
from service.runtime.card import latent_for_seed

router = APIRouter(prefix="/v1/models/{model}", tags=["latent space"])

GIF = "image/gif"
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 406, 413, 422, 503, 504)
}


def _standalone_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` inlined: `#/$defs/...` means nothing in OpenAPI."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {key: value for key, value in node.items() if key != "$ref"}
                return inline(definitions[ref.removeprefix("#/$defs/")] | rest)
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


@router.get(
    "/latents/{seed}",
    response_model=SeedLatent,
    responses={status: _ERRORS[status] for status in (401, 404, 406, 422)},
)
async def seed_latent(served: ServingModelDep, seed: str, request: Request) -> JSONResponse:
    """The latent vector a seed stands for, so clients can edit it and send it back as `latent`.

    It is `numpy.random.default_rng(seed).standard_normal(latent_dim, dtype=float32)`;
    generating from this latent gives the same image as generating from the seed.
    """
    negotiate(request.headers.get("accept"), [JSON])
    seed_value = parse_seed(seed)
    latent = latent_for_seed(seed_value, served.card.latent_dim)
    payload = SeedLatent(
        model=served.name,
        seed=seed_value,
        latent_dim=served.card.latent_dim,
        latent=latent.tolist(),  # float32 values are exact as JSON doubles
    )
    return JSONResponse(payload.model_dump(), headers=model_headers(served))


def _output_pixels(served: ServedModel, body: InterpolateRequest, media_type: str) -> int:
    image = served.card.image
    frame_pixels = image.height * image.width * body.scale**2
    if media_type == PNG:
        rows, cols = imaging.grid_shape(body.steps, body.columns or body.steps)
        return rows * cols * frame_pixels
    if media_type == GIF:
        return body.steps * frame_pixels  # every frame is held in memory while encoding
    return frame_pixels


_INTERPOLATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {PNG: {}, GIF: {}, JSON: {"schema": _standalone_schema(InterpolateResponse)}},
        "description": "A strip PNG (default), a looping animated GIF, or JSON frames.",
    },
    **_ERRORS,
}


@router.post(
    "/interpolate",
    response_class=Response,
    responses=_INTERPOLATE_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _standalone_schema(InterpolateRequest)}},
        }
    },
)
async def interpolate_latents(
    served: ServingModelDep, request: Request, dataplane: DataPlaneDep
) -> Response:
    """Frames from `start` to `end` (seeds or latents): a PNG strip, a GIF, or JSON by Accept.

    `slerp` follows the great circle between the two latents (default), `lerp` the straight
    line; `truncation` scales both ends. The first and last frames equal the images of the
    start and end. The frames go through the model's batcher like any other images.

    Class-conditional models: each end may name its `class` (default: its seed's class,
    seed % num_classes; a latent end needs one). The class weights move linearly from the
    start's class to the end's, in step with the latent path, so the frames blend from one
    class into the other.
    """
    media_type = negotiate(request.headers.get("accept"), [PNG, GIF, JSON])
    body = await parse_body(request, InterpolateRequest)
    dataplane.check_item_count(body.steps)
    start = served.latent_point(body.start.seed, body.start.latent, "start", body.truncation)
    end = served.latent_point(body.end.seed, body.end.latent, "end", body.truncation)
    start_class = served.resolve_class(body.start.class_, "start.class")
    end_class = served.resolve_class(body.end.class_, "end.class")
    weights = None
    if served.num_classes:
        start_class = served.effective_class(body.start.seed, start_class, "start.latent")
        end_class = served.effective_class(body.end.seed, end_class, "end.latent")
        weights = class_path(served, start_class, end_class, body.steps)
    latents = served.interpolation_latents(start, end, body.steps, body.method)
    check_output_pixels(_output_pixels(served, body, media_type))
    images = await cancel_on_disconnect(
        request.receive, served.images(latents, weights), request.scope
    )
    headers = model_headers(served)
    if media_type == PNG:
        strip = await encode_grid_png(images, body.columns or body.steps, body.scale)
        return Response(content=strip, media_type=PNG, headers=headers)
    if media_type == GIF:
        gif = await encode_gif(images, body.scale, body.frame_duration_ms, body.bounce)
        return Response(content=gif, media_type=GIF, headers=headers)
    pngs = await encode_pngs(images, body.scale)
    payload = InterpolateResponse(
        start_class=None if start_class is None else served.class_name(start_class),
        end_class=None if end_class is None else served.class_name(end_class),
        model=served.name,
        version=served.card.version,
        method=body.method,
        steps=body.steps,
        width=images[0].shape[1] * body.scale,
        height=images[0].shape[0] * body.scale,
        truncation=body.truncation,
        scale=body.scale,
        start_seed=body.start.seed,
        end_seed=body.end.seed,
        frames=[
            InterpolationFrame(
                index=index, t=float(t), png_base64=base64.b64encode(png).decode("ascii")
            )
            for index, (t, png) in enumerate(zip(positions(body.steps), pngs, strict=True))
        ],
    )
    content = payload.model_dump()
    if not served.num_classes:  # unconditional models: no class keys
        del content["start_class"], content["end_class"]
    return JSONResponse(content, headers=headers)


def class_path(served: ServedModel, start: int, end: int, steps: int) -> np.ndarray:
    """Class weights `[steps, num_classes]` moving linearly from `start`'s one-hot to `end`'s,
    in step with the latent path's positions (the ends exactly one-hot)."""
    ends = served.class_weight_rows([start, end]).astype(np.float64)
    t = positions(steps)[:, None]
    weights: np.ndarray = ((1.0 - t) * ends[0] + t * ends[1]).astype(np.float32)
    weights[0], weights[-1] = ends[0], ends[1]
    return weights
