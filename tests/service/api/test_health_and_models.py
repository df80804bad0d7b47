"""Health, readiness, metrics and the model descriptions."""

from __future__ import annotations

import httpx

from service.dataplane import Phase
from tests.service.conftest import GAN, VAE
from tests.service.helpers import assert_error, dataplane


async def test_liveness_on_both_paths(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/v2/health/live"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


async def test_ready_after_start_and_not_while_draining(client: httpx.AsyncClient) -> None:
    for path in ("/readyz", "/v2/health/ready"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "models": [GAN, VAE]}
    dataplane(client).phase = Phase.DRAINING
    response = await client.get("/readyz")
    assert_error(response, 503, "shutting_down")
    assert response.headers["retry-after"] == "1"
    assert_error(
        await client.post(f"/v1/models/{GAN}/generate", json={"seed": 1}), 503, "shutting_down"
    )
    dataplane(client).phase = Phase.READY


async def test_not_ready_before_start(client: httpx.AsyncClient) -> None:
    dataplane(client).phase = Phase.STARTING
    assert_error(await client.get("/v2/health/ready"), 503, "not_ready")
    assert_error(await client.get(f"/v1/models/{GAN}/images/1.png"), 503, "not_ready")
    dataplane(client).phase = Phase.READY


async def test_model_list_is_a_compact_summary_of_every_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    models = response.json()["models"]
    assert [model["name"] for model in models] == [GAN, VAE]
    gan = models[0]
    assert gan == {
        "name": GAN,
        "kind": "gan",
        "version": "1.0.0",
        "description": gan["description"],
        "latent_dim": 16,
        "image": {"height": 8, "width": 8, "channels": 3},
        "dataset": {"name": "none"},
        "metrics": {},  # the tiny test cards have no quality report
        "providers": ["CPUExecutionProvider"],
        "ready": True,
    }
    assert isinstance(gan["description"], str)
    assert (models[1]["kind"], models[1]["latent_dim"], models[1]["image"]["channels"]) == (
        "vae",
        4,
        1,
    )


async def test_model_list_says_when_models_are_not_ready(client: httpx.AsyncClient) -> None:
    dataplane(client).phase = Phase.DRAINING
    try:
        models = (await client.get("/v1/models")).json()["models"]
    finally:
        dataplane(client).phase = Phase.READY
    assert [model["ready"] for model in models] == [False, False]


async def test_one_model_has_the_whole_card(client: httpx.AsyncClient) -> None:
    gan = (await client.get(f"/v1/models/{GAN}")).json()
    assert gan["image"] == {
        "height": 8,
        "width": 8,
        "channels": 3,
        "layout": "NHWC",
        "output_range": [-1.0, 1.0],
    }
    assert gan["providers"] == ["CPUExecutionProvider"]
    assert gan["dataset"] == {"name": "none"}
    assert "metrics" in gan and "training" in gan
    assert len(gan["onnx"]["sha256"]) == 64


async def test_one_model(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/models/{VAE}")
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["kind"], body["latent_dim"]) == (VAE, "vae", 4)
    assert body["image"]["output_range"] == [0.0, 1.0]


async def test_metrics_count_requests_images_and_batches(client: httpx.AsyncClient) -> None:
    await client.post(f"/v1/models/{GAN}/generate", json={"seed": 1})
    await client.post(f"/v1/models/{GAN}/generate/batch", json={"seeds": [1, 2, 3]})
    await client.post("/v1/models/nope/generate", json={})
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'imagegen_http_requests_total{method="POST",route="/v1/models/{model}/generate",'
        'status="200"} 1.0'
    ) in text
    assert f'imagegen_images_generated_total{{model="{GAN}"}} 4.0' in text
    assert f'imagegen_batch_size_images_count{{model="{GAN}"}}' in text
    assert f'imagegen_queue_depth_images{{model="{GAN}"}} 0.0' in text
    assert f'imagegen_queue_wait_seconds_count{{model="{GAN}"}} 4.0' in text
    assert f'imagegen_inference_seconds_count{{model="{GAN}"}}' in text
    assert 'imagegen_rejections_total{reason="model_not_found"} 1.0' in text
    assert "imagegen_http_request_duration_seconds_bucket" in text


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/v1/models/{model}/generate" in paths
    assert "/v1/models/{model}/generate/batch" in paths
    assert "/v1/models/{model}/images/{seed}.png" in paths
