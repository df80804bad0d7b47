"""The naive peer: FastAPI with one `session.run` per request and no batching.

    python -m benchmarks.peers.naive --model-dir models/fashion-gan --port 8100

A plain `def` route, which FastAPI runs in its thread pool, so requests run concurrently
on onnxruntime's thread-safe session.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Response
from pydantic import BaseModel

from benchmarks.peers.common import Model, png


class GenerateRequest(BaseModel):
    seed: int


def create_app(model_dir: Path) -> FastAPI:
    model = Model(model_dir)
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/v1/models/{name}")
    def describe(name: str) -> dict[str, object]:
        return {"name": model.card.name, "latent_dim": model.card.latent_dim}

    @app.post("/v1/models/{name}/generate")
    def generate(name: str, body: GenerateRequest) -> Response:
        (image,) = model.images(np.stack([model.latent(body.seed)]))
        return Response(content=png(image), media_type="image/png")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_dir), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
