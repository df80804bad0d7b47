"""Image generation: one image (PNG or JSON), a cacheable seeded PNG, and batches."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import JSONResponse, Response

from service.api.deps import DataPlaneDep, ServingModelDep, openapi_body, parse_body
from service.api.disconnect import cancel_on_disconnect
from service.api.fast import FastPath
from service.api.negotiation import negotiate
from service.api.schemas import (
    MAX_SCALE,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
)
from service.dataplane import ServedModel, encode_grid_png, random_seed

router = APIRouter(prefix="/v1/models/{model}", tags=["images"])

PNG = "image/png"
JSON = "application/json"

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 406, 413, 422, 503, 504)
}


def _with_errors(ok: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    return ok | _ERRORS


async def _fast_path_reply(request: Request) -> Response:
    """The answer of service.api.fast's handler, which serves these routes ahead of FastAPI;
    FastAPI declares them (the OpenAPI text comes from here) and answers alike if it routes
    a request to them."""
    fast_path: FastPath = request.app.state.fast_path
    reply = await fast_path.reply(request.scope, request.receive)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in reply.headers}
    return Response(content=reply.body, status_code=reply.status, headers=headers)


def model_headers(served: ServedModel) -> dict[str, str]:
    return {"X-Model": served.name, "X-Model-Version": served.card.version}


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
    return await _fast_path_reply(request)


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
    class_: Annotated[
        str | None,
        Query(
            alias="class",
            description="Class-conditional models: a class name (case-insensitive) or index; "
            "default seed % num_classes. Part of the ETag.",
        ),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The PNG for a seed, identical to POST generate; cacheable forever (strong ETag).

    `truncation`, `scale` and (conditional models) `class` as for POST generate; HEAD
    answers the same headers. With an API key configured, `Cache-Control` is `private` and
    the answer varies by Authorization.
    """
    return await _fast_path_reply(request)


@router.post(
    "/generate/batch",
    response_class=Response,
    responses=_with_errors(
        {200: {"content": {JSON: {"schema": BatchResponse.model_json_schema()}, PNG: {}}}}
    ),
    openapi_extra=openapi_body(BatchRequest),
)
async def generate_batch(
    served: ServingModelDep, request: Request, dataplane: DataPlaneDep
) -> Response:
    """Many images from `seeds`, `latents` or `count`; JSON with base64 PNGs, or one grid PNG."""
    media_type = negotiate(request.headers.get("accept"), [JSON, PNG])
    body = await parse_body(request, BatchRequest)
    dataplane.check_item_count(body.item_count)
    seeds: list[int | None]
    wanted = batch_classes(served, body)
    seed_list: list[int] | None = None
    latents = None
    if body.latents is not None:
        latents = served.latents_from_values(body.latents)  # checked; truncated with the jobs
        seeds = [None] * len(body.latents)
    else:
        if body.seeds is not None:
            seed_list = body.seeds
        else:
            count = body.item_count
            start = body.seed if body.seed is not None else random_seed(count)
            seed_list = list(range(start, start + count))
        seeds = list(seed_list)
    classes: list[int] | None = None
    if served.num_classes:
        classes = [
            served.effective_class(seed, index, f"latents[{i}]")
            for i, (seed, index) in enumerate(zip(seeds, wanted, strict=True))
        ]
    headers = model_headers(served)
    # Seeds become latents (and small images PNGs) in the inference thread, with their batch.
    if media_type == PNG:
        served.check_output_size(len(seeds), body.scale, body.columns)
        jobs = served.jobs(
            seeds=seed_list, latents=latents, truncation=body.truncation, classes=classes
        )
        images = await cancel_on_disconnect(request.receive, served.run(jobs), request.scope)
        grid = await encode_grid_png(images, body.columns, body.scale)  # type: ignore[arg-type]
        if seeds[0] is not None:
            headers["X-Seeds"] = ",".join(str(seed) for seed in seeds)
        if classes is not None:
            headers["X-Classes"] = ",".join(str(index) for index in classes)
        return Response(content=grid, media_type=PNG, headers=headers)
    served.check_output_size(1, body.scale)
    work = served.pngs(
        seeds=seed_list,
        latents=latents,
        truncation=body.truncation,
        scale=body.scale,
        classes=classes,
    )
    pngs = await cancel_on_disconnect(request.receive, work, request.scope)
    # BatchResponse's shape, built directly: pydantic's construction and dump of 64 images
    # cost more event-loop time than the rest of the request.
    image = served.card.image
    items: list[dict[str, Any]] = [
        {"seed": seed, "png_base64": base64.b64encode(png).decode("ascii")}
        for seed, png in zip(seeds, pngs, strict=True)
    ]
    if classes is not None:  # conditional models: each image's class
        for item, index in zip(items, classes, strict=True):
            item["class"] = served.class_name(index)
    content = {
        "model": served.name,
        "version": served.card.version,
        "width": image.width * body.scale,
        "height": image.height * body.scale,
        "images": items,
    }
    return JSONResponse(content, headers=headers)


def batch_classes(served: ServedModel, body: BatchRequest) -> list[int | None]:
    """Each image's requested class index (None: none given), checked against the model."""
    count = body.item_count
    if body.classes is not None:
        return [
            served.resolve_class(value, f"classes[{index}]")
            for index, value in enumerate(body.classes)
        ]
    return [served.resolve_class(body.class_)] * count
