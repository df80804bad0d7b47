"""The Open Inference Protocol with its reference client: tritonclient over REST and gRPC
against a real `imagegen serve` process, beside the v1 API on the same models.

tritonclient is imported here only: its protobuf messages share the package `inference` with
the server's, so the server runs in a process of its own (as in production).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.reliability.harness import HOST, Server, free_port, launch, metric_sum
from tests.reliability.models import CHANNELS, HEIGHT, LATENT_DIM, WIDTH, write_tiny

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.server

MODEL = "tiny-gan"
API_KEY = "v2-test-key"
MAX_ITEMS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    root = tmp_path_factory.mktemp("v2")
    write_tiny(root / "models", MODEL)
    grpc_port = free_port()
    started = launch(
        root / "models",
        root / "server.log",
        grpc_port=grpc_port,
        max_items_per_request=MAX_ITEMS,
        max_batch_delay_ms=2,
    )
    try:
        started.wait_ready()
        yield started, grpc_port
    finally:
        started.stop()


@pytest.fixture
def rest(server: tuple[Server, int]) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"{HOST}:{server[0].port}")
    yield client
    client.close()


@pytest.fixture
def grpc(server: tuple[Server, int]) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"{HOST}:{server[1]}")
    yield client
    client.close()


def v1_png(server: Server, seed: int) -> bytes:
    response = httpx.get(f"{server.base_url}/v1/models/{MODEL}/images/{seed}.png", timeout=30)
    assert response.status_code == 200
    return response.content


def pixels(png: bytes) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(png)))
    return image if image.ndim == 3 else image[..., None]


def seed_input(module: object, seeds: list[int], binary: bool = True) -> object:
    tensor = module.InferInput("seed", [len(seeds)], "INT64")  # type: ignore[attr-defined]
    array = np.array(seeds, dtype=np.int64)
    if module is httpclient:
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def latent_input(module: object, latents: np.ndarray, binary: bool = True) -> object:
    tensor = module.InferInput("latent", list(latents.shape), "FP32")  # type: ignore[attr-defined]
    if module is httpclient:
        tensor.set_data_from_numpy(latents, binary_data=binary)
    else:
        tensor.set_data_from_numpy(latents)
    return tensor


def test_health_and_metadata_over_both_transports(
    rest: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    for client in (rest, grpc):
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1.0.0")
        assert not client.is_model_ready("no-such-model")
    metadata = rest.get_server_metadata()
    assert metadata["name"] == "imagegen"
    assert "binary_tensor_data" in metadata["extensions"]
    assert grpc.get_server_metadata(as_json=True)["extensions"] == ["binary_tensor_data"]
    expected = {
        "name": MODEL,
        "versions": ["1.0.0"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "latent", "datatype": "FP32", "shape": [-1, LATENT_DIM]},
            {"name": "seed", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [
            {"name": "image", "datatype": "UINT8", "shape": [-1, HEIGHT, WIDTH, CHANNELS]},
            {"name": "png", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert rest.get_model_metadata(MODEL) == expected
    assert rest.get_model_metadata(MODEL, "1.0.0") == expected
    from_grpc = grpc.get_model_metadata(MODEL, as_json=True)
    for tensor in from_grpc["inputs"] + from_grpc["outputs"]:
        tensor["shape"] = [int(d) for d in tensor["shape"]]  # protobuf JSON writes int64 as text
    assert from_grpc == expected


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_rest_seeds_give_the_v1_images(
    server: tuple[Server, int], rest: httpclient.InferenceServerClient, binary: bool
) -> None:
    seeds = [0, 7, 2**63 - 1]
    outputs = [
        httpclient.InferRequestedOutput("image", binary_data=binary),
        httpclient.InferRequestedOutput("png", binary_data=binary),
    ]
    result = rest.infer(MODEL, [seed_input(httpclient, seeds, binary)], outputs=outputs)
    images = result.as_numpy("image")
    assert images.dtype == np.uint8 and images.shape == (3, HEIGHT, WIDTH, CHANNELS)
    pngs = result.as_numpy("png")
    for index, seed in enumerate(seeds):
        expected = v1_png(server[0], seed)
        assert np.array_equal(images[index], pixels(expected))
        png = pngs[index]
        if not binary:  # JSON carries BYTES as base64 text (parameter content_type: base64)
            import base64

            png = base64.b64decode(png)
        assert png == expected


def test_rest_latents_and_requested_outputs(
    server: tuple[Server, int], rest: httpclient.InferenceServerClient
) -> None:
    latents = np.random.default_rng(3).standard_normal((2, LATENT_DIM)).astype(np.float32)
    for binary in (True, False):
        result = rest.infer(
            MODEL,
            [latent_input(httpclient, latents, binary)],
            outputs=[httpclient.InferRequestedOutput("png")],
        )
        assert result.as_numpy("image") is None  # only what was asked for
        for index, latent in enumerate(latents):
            v1 = httpx.post(
                f"{server[0].base_url}/v1/models/{MODEL}/generate",
                json={"latent": latent.tolist()},
                headers={"accept": "image/png"},
                timeout=30,
            )
            assert result.as_numpy("png")[index] == v1.content
    result = rest.infer(
        MODEL,
        [latent_input(httpclient, latents)],
        outputs=[httpclient.InferRequestedOutput("image")],
        request_id="req-1",
    )
    assert result.get_response()["id"] == "req-1"
    assert result.as_numpy("png") is None
    assert result.as_numpy("image").shape == (2, HEIGHT, WIDTH, CHANNELS)


def test_grpc_gives_the_same_tensors_as_rest(
    rest: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    seeds = [11, 12, 13, 14]
    over_rest = rest.infer(MODEL, [seed_input(httpclient, seeds)])
    over_grpc = grpc.infer(MODEL, [seed_input(grpcclient, seeds)], request_id="g-1")
    assert over_grpc.get_response().id == "g-1"
    assert np.array_equal(over_grpc.as_numpy("image"), over_rest.as_numpy("image"))
    assert list(over_grpc.as_numpy("png")) == list(over_rest.as_numpy("png"))
    latents = np.linspace(-2, 2, 3 * LATENT_DIM, dtype=np.float32).reshape(3, LATENT_DIM)
    by_latent = grpc.infer(
        MODEL,
        [latent_input(grpcclient, latents)],
        outputs=[grpcclient.InferRequestedOutput("image")],
    )
    expected = rest.infer(MODEL, [latent_input(httpclient, latents)]).as_numpy("image")
    assert np.array_equal(by_latent.as_numpy("image"), expected)
    assert by_latent.as_numpy("png") is None


def _rest_error(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_errors_reach_the_clients_as_the_protocol_says(
    rest: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    both = [
        seed_input(httpclient, [1]),
        latent_input(httpclient, np.zeros((1, LATENT_DIM), np.float32)),
    ]
    error = _rest_error(lambda: rest.infer(MODEL, both))
    assert error.status() == "400" and "not both" in error.message()
    error = _rest_error(lambda: rest.infer("nope", [seed_input(httpclient, [1])]))
    assert error.status() == "404" and "nope" in error.message()
    error = _rest_error(lambda: rest.infer(MODEL, [seed_input(httpclient, [1])], model_version="9"))
    assert error.status() == "404" and "version" in error.message()
    too_many = list(range(MAX_ITEMS + 1))
    error = _rest_error(lambda: rest.infer(MODEL, [seed_input(httpclient, too_many)]))
    assert error.status() == "413" and f"limit is {MAX_ITEMS}" in error.message()

    grpc_both = [
        seed_input(grpcclient, [1]),
        latent_input(grpcclient, np.zeros((1, LATENT_DIM), np.float32)),
    ]
    error = _rest_error(lambda: grpc.infer(MODEL, grpc_both))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "not both" in error.message()
    error = _rest_error(lambda: grpc.infer("nope", [seed_input(grpcclient, [1])]))
    assert error.status() == "StatusCode.NOT_FOUND"
    error = _rest_error(lambda: grpc.infer(MODEL, [seed_input(grpcclient, too_many)]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"limit is {MAX_ITEMS}" in error.message()
    bad = grpcclient.InferInput("seed", [1], "FP32")
    bad.set_data_from_numpy(np.zeros(1, np.float32))
    error = _rest_error(lambda: grpc.infer(MODEL, [bad]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "INT64" in error.message()


def test_requests_are_counted_by_protocol(
    server: tuple[Server, int],
    rest: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
) -> None:
    before = server[0].metrics()
    rest.infer(MODEL, [seed_input(httpclient, [5])])
    grpc.infer(MODEL, [seed_input(grpcclient, [5])])
    v1_png(server[0], 5)
    after = server[0].metrics()

    def grew(**labels: str) -> float:
        name = "imagegen_protocol_requests_total"
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert grew(protocol="v2", status="200") >= 1
    assert grew(protocol="grpc", status="OK") == 1
    assert grew(protocol="v1", status="200") >= 1
    text = httpx.get(f"{server[0].base_url}/metrics", timeout=30).text
    assert 'route="/v2/models/{model}/infer",status="200"' in text  # the route label too


def test_the_api_key_guards_v2_rest_and_grpc(tmp_path: Path) -> None:
    write_tiny(tmp_path / "models", MODEL)
    grpc_port = free_port()
    server = launch(
        tmp_path / "models",
        tmp_path / "server.log",
        grpc_port=grpc_port,
        env={"IMAGEGEN_API_KEY": API_KEY},
    )
    try:
        server.wait_ready()
        good = {"Authorization": f"Bearer {API_KEY}"}
        rest = httpclient.InferenceServerClient(f"{HOST}:{server.port}")
        assert rest.is_server_live() and rest.is_server_ready()  # health stays open
        error = _rest_error(lambda: rest.get_model_metadata(MODEL))
        assert error.status() == "401"
        assert rest.get_model_metadata(MODEL, headers=good)["name"] == MODEL
        result = rest.infer(MODEL, [seed_input(httpclient, [1])], headers=good)
        assert result.as_numpy("image").shape == (1, HEIGHT, WIDTH, CHANNELS)
        rest.close()

        grpc = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")
        assert grpc.is_server_live() and grpc.is_server_ready()
        error = _rest_error(lambda: grpc.infer(MODEL, [seed_input(grpcclient, [1])]))
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        error = _rest_error(
            lambda: grpc.infer(
                MODEL, [seed_input(grpcclient, [1])], headers={"authorization": "Bearer nope"}
            )
        )
        assert error.status() == "StatusCode.UNAUTHENTICATED" and "wrong" in error.message()
        result = grpc.infer(
            MODEL, [seed_input(grpcclient, [1])], headers={"authorization": f"Bearer {API_KEY}"}
        )
        assert result.as_numpy("image").shape == (1, HEIGHT, WIDTH, CHANNELS)
        grpc.close()
        assert API_KEY not in server.log()
    finally:
        server.stop()


def test_workers_share_the_grpc_port(tmp_path: Path) -> None:
    """With --workers 2 every worker binds the gRPC port (SO_REUSEPORT); calls are answered."""
    write_tiny(tmp_path / "models", MODEL)
    grpc_port = free_port()
    server = launch(tmp_path / "models", tmp_path / "server.log", grpc_port=grpc_port, workers=2)
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while server.log().count("gRPC (Open Inference Protocol) on") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        for _ in range(4):  # new channels: the kernel spreads them over the workers
            client = grpcclient.InferenceServerClient(f"{HOST}:{grpc_port}")
            assert client.is_model_ready(MODEL)
            client.close()
    finally:
        server.stop()


def test_the_readme_tritonclient_example_runs(tmp_path: Path) -> None:
    """The README's five-line example, as written, against the shipped models."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Open Inference Protocol", 1)[1]
    (example,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    lines = [line for line in example.splitlines() if line and not line.startswith("import")]
    assert len(lines) == 5, lines
    grpc_port = free_port()
    server = launch(root / "models", tmp_path / "server.log", grpc_port=grpc_port)
    try:
        server.wait_ready()
        script = example.replace("127.0.0.1:8001", f"{HOST}:{grpc_port}")
        script += "\nassert images.shape == (4, 28, 28, 1) and pngs[0].startswith(b'\\x89PNG')\n"
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
