"""Image generation: one image (PNG or JSON), a cacheable seeded PNG, and batches."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import JSONResponse, Response

from service.api.deps import ServingModelDep, SettingsDep, openapi_body, parse_body
from service.api.disconnect import cancel_on_disconnect
from service.api.negotiation import negotiate
from service.api.schemas import (
    MAX_SCALE,
    BatchImage,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
)
from service.dataplane import ServedModel, encode_grid_png, encode_pngs
from service.errors import InvalidInput, TooManyItems, quoted
from service.imaging import grid_shape
from service.runtime.card import MAX_SEED

router = APIRouter(prefix="/v1/models/{model}", tags=["images"])

PNG = "image/png"
JSON = "application/json"
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_OUTPUT_PIXELS = 64 * 1024 * 1024  # one response image, after scaling and tiling
_SEED_PATTERN = re.compile(r"[0-9]{1,19}")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 406, 413, 422, 503, 504)
}


def _with_errors(ok: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    return ok | _ERRORS


def _model_headers(served: ServedModel) -> dict[str, str]:
    return {"X-Model": served.name, "X-Model-Version": served.card.version}


def _check_output_size(served: ServedModel, count: int, scale: int, columns: int | None) -> None:
    rows, cols = grid_shape(count, columns)
    image = served.card.image
    pixels = rows * image.height * scale * cols * image.width * scale
    if pixels > MAX_OUTPUT_PIXELS:
        raise InvalidInput(
            f"the response image would have {pixels} pixels; the limit is {MAX_OUTPUT_PIXELS}"
        )


@router.post(
    "/generate",
    response_class=Response,
    responses=_with_errors(
        {200: {"content": {PNG: {}, JSON: {"schema": GenerateResponse.model_json_schema()}}}}
    ),
    openapi_extra=openapi_body(GenerateRequest),
)
async def generate(served: ServingModelDep, request: Request) -> Response:
    """One image from `seed`, `latent` or a random seed: PNG, or JSON when asked by Accept."""
    media_type = negotiate(request.headers.get("accept"), [PNG, JSON])
    body = await parse_body(request, GenerateRequest)
    seed = body.seed
    if body.latent is not None:
        latents = served.latents_from_values([body.latent], body.truncation)
    else:
        if seed is None:
            seed = secrets.randbelow(MAX_SEED)
        latents = served.latents_for_seeds([seed], body.truncation)
    _check_output_size(served, 1, body.scale, None)
    (image,) = await cancel_on_disconnect(request, served.images(latents))
    (png,) = await encode_pngs([image], body.scale)
    headers = _model_headers(served)
    if seed is not None:
        headers["X-Seed"] = str(seed)
    if media_type == PNG:
        return Response(content=png, media_type=PNG, headers=headers)
    payload = GenerateResponse(
        model=served.name,
        version=served.card.version,
        seed=seed,
        width=image.shape[1] * body.scale,
        height=image.shape[0] * body.scale,
        truncation=body.truncation,
        scale=body.scale,
        png_base64=base64.b64encode(png).decode("ascii"),
    )
    return JSONResponse(payload.model_dump(), headers=headers)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    return "*" in candidates or etag in (tag.removeprefix("W/") for tag in candidates)


@router.get(
    "/images/{seed}.png",
    response_class=Response,
    responses=_with_errors({200: {"content": {PNG: {}}}, 304: {"description": "Not modified"}}),
)
async def seeded_image(
    served: ServingModelDep,
    seed: str,
    request: Request,
    truncation: Annotated[float, Query(gt=0, le=1)] = 1.0,
    scale: Annotated[int, Query(ge=1, le=MAX_SCALE)] = 1,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The PNG for a seed, identical to POST generate; cacheable forever (strong ETag)."""
    negotiate(request.headers.get("accept"), [PNG])
    if not _SEED_PATTERN.fullmatch(seed) or int(seed) >= MAX_SEED:
        raise InvalidInput(f"seed must be an integer 0 <= seed < 2**63, got {quoted(seed)}")
    seed_value = int(seed)
    etag = served.image_etag(seed_value, truncation, scale)
    headers = _model_headers(served) | {
        "X-Seed": str(seed_value),
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
    }
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    _check_output_size(served, 1, scale, None)
    latents = served.latents_for_seeds([seed_value], truncation)
    (image,) = await cancel_on_disconnect(request, served.images(latents))
    (png,) = await encode_pngs([image], scale)
    return Response(content=png, media_type=PNG, headers=headers)


@router.post(
    "/generate/batch",
    response_class=Response,
    responses=_with_errors(
        {200: {"content": {JSON: {"schema": BatchResponse.model_json_schema()}, PNG: {}}}}
    ),
    openapi_extra=openapi_body(BatchRequest),
)
async def generate_batch(
    served: ServingModelDep, request: Request, settings: SettingsDep
) -> Response:
    """Many images from `seeds`, `latents` or `count`; JSON with base64 PNGs, or one grid PNG."""
    media_type = negotiate(request.headers.get("accept"), [JSON, PNG])
    body = await parse_body(request, BatchRequest)
    if body.item_count > settings.max_items_per_request:
        raise TooManyItems(
            f"{body.item_count} images requested; the limit is {settings.max_items_per_request}"
        )
    seeds: list[int | None]
    if body.latents is not None:
        latents = served.latents_from_values(body.latents, body.truncation)
        seeds = [None] * len(body.latents)
    else:
        if body.seeds is not None:
            seed_list = body.seeds
        else:
            count = body.item_count
            start = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED - count + 1)
            seed_list = list(range(start, start + count))
        latents = served.latents_for_seeds(seed_list, body.truncation)
        seeds = list(seed_list)
    headers = _model_headers(served)
    if media_type == PNG:
        _check_output_size(served, len(seeds), body.scale, body.columns)
    else:
        _check_output_size(served, 1, body.scale, None)
    images = await cancel_on_disconnect(request, served.images(latents))
    if media_type == PNG:
        grid = await encode_grid_png(images, body.columns, body.scale)
        if seeds[0] is not None:
            headers["X-Seeds"] = ",".join(str(seed) for seed in seeds)
        return Response(content=grid, media_type=PNG, headers=headers)
    pngs = await encode_pngs(images, body.scale)
    payload = BatchResponse(
        model=served.name,
        version=served.card.version,
        width=images[0].shape[1] * body.scale,
        height=images[0].shape[0] * body.scale,
        images=[
            BatchImage(seed=seed, png_base64=base64.b64encode(png).decode("ascii"))
            for seed, png in zip(seeds, pngs, strict=True)
        ],
    )
    return JSONResponse(payload.model_dump(), headers=headers)
