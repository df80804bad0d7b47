"""Latent space: a seed's latent vector, and interpolation between two seeds or latents."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from service import imaging
from service.api.deps import ServingModelDep, SettingsDep, parse_body
from service.api.disconnect import cancel_on_disconnect
from service.api.negotiation import negotiate
from service.api.routes.images import JSON, PNG
from service.api.schemas import (
    ErrorResponse,
    InterpolateRequest,
    InterpolateResponse,
    InterpolationFrame,
    LatentPoint,
    SeedLatent,
)
from service.dataplane import MAX_OUTPUT_PIXELS, ServedModel, encode_grid_png, encode_pngs
from service.errors import InvalidInput, TooManyItems, quoted
from service.interpolation import LatentOverflow, interpolate, positions
from service.runtime.card import MAX_SEED, latent_for_seed

router = APIRouter(prefix="/v1/models/{model}", tags=["latent space"])

GIF = "image/gif"
_SEED_PATTERN = re.compile(r"[0-9]{1,19}")
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


def _headers(served: ServedModel) -> dict[str, str]:
    return {"X-Model": served.name, "X-Model-Version": served.card.version}


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
    if not _SEED_PATTERN.fullmatch(seed) or int(seed) >= MAX_SEED:
        raise InvalidInput(f"seed must be an integer 0 <= seed < 2**63, got {quoted(seed)}")
    seed_value = int(seed)
    latent = latent_for_seed(seed_value, served.card.latent_dim)
    payload = SeedLatent(
        model=served.name,
        seed=seed_value,
        latent_dim=served.card.latent_dim,
        latent=latent.tolist(),  # float32 values are exact as JSON doubles
    )
    return JSONResponse(payload.model_dump(), headers=_headers(served))


def _endpoint(served: ServedModel, point: LatentPoint, where: str, truncation: float) -> np.ndarray:
    row: np.ndarray
    if point.seed is not None:
        row = served.latents_for_seeds([point.seed], truncation)[0]
        return row
    assert point.latent is not None  # LatentPoint holds exactly one
    if len(point.latent) != served.card.latent_dim:
        raise InvalidInput(
            f"{where}.latent has {len(point.latent)} values; model {served.name} needs "
            f"latent_dim={served.card.latent_dim}"
        )
    row = served.latents_from_values([point.latent], truncation)[0]
    return row


def _check_output_size(served: ServedModel, body: InterpolateRequest, media_type: str) -> None:
    image = served.card.image
    frame_pixels = image.height * image.width * body.scale**2
    if media_type == PNG:
        rows, cols = imaging.grid_shape(body.steps, body.columns or body.steps)
        pixels = rows * cols * frame_pixels
    elif media_type == GIF:
        pixels = body.steps * frame_pixels  # every frame is held in memory while encoding
    else:
        pixels = frame_pixels
    if pixels > MAX_OUTPUT_PIXELS:
        raise InvalidInput(
            f"the response would have {pixels} pixels; the limit is {MAX_OUTPUT_PIXELS}"
        )


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
    served: ServingModelDep, request: Request, settings: SettingsDep
) -> Response:
    """Frames from `start` to `end` (seeds or latents): a PNG strip, a GIF, or JSON by Accept.

    `slerp` follows the great circle between the two latents (default), `lerp` the straight
    line; `truncation` scales both ends. The first and last frames equal the images of the
    start and end. The frames go through the model's batcher like any other images.
    """
    media_type = negotiate(request.headers.get("accept"), [PNG, GIF, JSON])
    body = await parse_body(request, InterpolateRequest)
    if body.steps > settings.max_items_per_request:
        raise TooManyItems(
            f"{body.steps} frames requested; the limit is {settings.max_items_per_request}"
        )
    start = _endpoint(served, body.start, "start", body.truncation)
    end = _endpoint(served, body.end, "end", body.truncation)
    try:
        latents = interpolate(start, end, body.steps, body.method)
    except LatentOverflow as error:
        raise InvalidInput(str(error)) from None
    _check_output_size(served, body, media_type)
    images = await cancel_on_disconnect(request.receive, served.images(latents))
    headers = _headers(served)
    if media_type == PNG:
        strip = await encode_grid_png(images, body.columns or body.steps, body.scale)
        return Response(content=strip, media_type=PNG, headers=headers)
    if media_type == GIF:
        gif = await _encode_gif(images, body)
        return Response(content=gif, media_type=GIF, headers=headers)
    pngs = await encode_pngs(images, body.scale)
    payload = InterpolateResponse(
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
    return JSONResponse(payload.model_dump(), headers=headers)


async def _encode_gif(images: list[np.ndarray], body: InterpolateRequest) -> bytes:
    """The animation, encoded in a worker thread (palette building is CPU work)."""
    return await asyncio.to_thread(
        imaging.encode_gif, images, body.scale, body.frame_duration_ms, body.bounce
    )
