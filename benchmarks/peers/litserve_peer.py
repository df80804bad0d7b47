"""The LitServe peer: LitServe's dynamic batching (32 images, 2 ms) on the same model.

python -m benchmarks.peers.litserve_peer --model-dir models/fashion-gan --port 8200
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run
# time to validate the body, and a string there would make it a query parameter.
import argparse
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import Response

from benchmarks.peers.common import Model, png
from benchmarks.peers.naive import GenerateRequest
from service.runtime.card import CARD_FILENAME, ModelCard

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.002


class GeneratorAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, model_dir: Path, **options: Any) -> None:
        super().__init__(**options)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        self.model = Model(self.model_dir)

    def decode_request(self, request: GenerateRequest) -> np.ndarray:
        return self.model.latent(request.seed)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, latents: np.ndarray) -> np.ndarray:
        return self.model.images(latents)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, image: np.ndarray) -> Response:
        return Response(content=png(image), media_type="image/png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8200)
    args = parser.parse_args()
    name = args.model_dir.name
    api = GeneratorAPI(
        args.model_dir,
        max_batch_size=MAX_BATCH_SIZE,
        batch_timeout=BATCH_TIMEOUT_S,
        api_path=f"/v1/models/{name}/generate",
    )
    server = ls.LitServer(api, accelerator="cpu", healthcheck_path="/readyz")
    card = ModelCard.load(args.model_dir / CARD_FILENAME)

    @server.app.get(f"/v1/models/{name}")  # type: ignore[untyped-decorator]
    def describe() -> dict[str, object]:  # what the load tester checks before it starts
        return {"name": card.name, "latent_dim": card.latent_dim}

    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
