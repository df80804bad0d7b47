"""Fixtures for service tests: tiny real ONNX generators with their model cards, settings, apps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.app import create_app
from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, sha256_file
from service.settings import Settings

OPSET = 17


def build_generator(
    *,
    latent_dim: int = 8,
    height: int = 4,
    width: int = 4,
    channels: int = 3,
    activation: str = "Tanh",
    input_name: str = "latent",
    output_name: str = "image",
    conv: bool = False,
    fixed_batch: int | None = None,
    weight_seed: int = 0,
    num_classes: int = 0,
    class_input_name: str = "class_weights",
) -> onnx.ModelProto:
    """latent [N, d] -> dense -> activation -> [N, H, W, C] float32.

    With `conv`, a DCGAN-like path (dense -> ReLU -> ConvTranspose stride 2 -> activation ->
    NCHW to NHWC), the kinds of kernels real exported generators run. With `num_classes`,
    a class-conditional generator: a second input `class_input_name` [N, num_classes]
    float32 whose product with a class matrix is added to the dense layer (so each class
    shifts the image, and a blend of classes shifts it by the blend).
    """
    rng = np.random.default_rng(weight_seed)
    batch: int | str = fixed_batch if fixed_batch is not None else "batch"

    def weight(name: str, *shape: int, scale: float = 0.5) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    def ints(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, dtype=np.int64), name)

    if conv:
        assert height % 2 == 0 and width % 2 == 0
        hidden = 8
        h0, w0 = height // 2, width // 2
        initializers = [
            weight("w_dense", latent_dim, hidden * h0 * w0),
            weight("b_dense", hidden * h0 * w0, scale=0.1),
            ints("nchw", [-1, hidden, h0, w0]),
            weight("w_up", hidden, channels, 4, 4, scale=0.2),
        ]
        nodes = [
            helper.make_node("Gemm", [input_name, "w_dense", "b_dense"], ["dense"]),
            helper.make_node("Relu", ["dense_c" if num_classes else "dense"], ["relu"]),
            helper.make_node("Reshape", ["relu", "nchw"], ["feature"]),
            helper.make_node(
                "ConvTranspose", ["feature", "w_up"], ["up"], strides=[2, 2], pads=[1, 1, 1, 1]
            ),
            helper.make_node(activation, ["up"], ["act"]),
            helper.make_node("Transpose", ["act"], [output_name], perm=[0, 2, 3, 1]),
        ]
    else:
        initializers = [
            weight("w_dense", latent_dim, height * width * channels),
            weight("b_dense", height * width * channels, scale=0.1),
            ints("nhwc", [-1, height, width, channels]),
        ]
        nodes = [
            helper.make_node("MatMul", [input_name, "w_dense"], ["mm"]),
            helper.make_node("Add", ["mm", "b_dense"], ["dense"]),
            helper.make_node(activation, ["dense_c" if num_classes else "dense"], ["act"]),
            helper.make_node("Reshape", ["act", "nhwc"], [output_name]),
        ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, latent_dim])]
    if num_classes:
        dense_size = initializers[1].dims[0]
        initializers.append(weight("w_class", num_classes, dense_size, scale=2.0))
        after = next(i for i, node in enumerate(nodes) if "dense" in node.output) + 1
        nodes[after:after] = [
            helper.make_node("MatMul", [class_input_name, "w_class"], ["class_shift"]),
            helper.make_node("Add", ["dense", "class_shift"], ["dense_c"]),
        ]
        inputs.append(
            helper.make_tensor_value_info(class_input_name, TensorProto.FLOAT, [batch, num_classes])
        )
    graph = helper.make_graph(
        nodes,
        "tiny_generator",
        inputs,
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, [batch, height, width, channels]
            )
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def card_for(
    name: str, model: onnx.ModelProto, onnx_path: Path, **overrides: Any
) -> dict[str, Any]:
    """A model.json matching the graph (its shapes and names) and the file's sha256."""
    graph = model.graph
    input_dims = graph.input[0].type.tensor_type.shape.dim
    output_dims = graph.output[0].type.tensor_type.shape.dim
    activation = next(n.op_type for n in graph.node if n.op_type in ("Tanh", "Sigmoid"))
    card: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "kind": "gan" if activation == "Tanh" else "vae",
        "description": "tiny test generator with random weights",
        "latent_dim": input_dims[1].dim_value,
        "input_name": graph.input[0].name,
        "output_name": graph.output[0].name,
        "image": {
            "height": output_dims[1].dim_value,
            "width": output_dims[2].dim_value,
            "channels": output_dims[3].dim_value,
            "output_range": [-1.0, 1.0] if activation == "Tanh" else [0.0, 1.0],
        },
        "dataset": {"name": "none"},
        "training": {"epochs": 0},
        "metrics": {"fid": None},
        "onnx": {"opset": OPSET, "sha256": sha256_file(onnx_path), "producers": {"onnx": "test"}},
    }
    if len(graph.input) == 2:
        class_input = graph.input[1]
        num_classes = class_input.type.tensor_type.shape.dim[1].dim_value
        card["conditioning"] = {
            "input_name": class_input.name,
            "classes": list(TINY_CLASSES[:num_classes]),
        }
    card.update(overrides)
    return card


# Class names of the tiny conditional generators (mixed case, a space: names are matched
# case-insensitively).
TINY_CLASSES = ("Cat", "Dog", "Ankle boot", "Bird", "Fish", "Frog", "Horse", "Ship")

ModelFactory = Callable[..., Path]


@pytest.fixture
def make_model(tmp_path: Path) -> ModelFactory:
    """`make_model(name, models_dir=None, card_overrides=None, **graph_options) -> folder`."""

    def make(
        name: str,
        models_dir: Path | None = None,
        card_overrides: dict[str, Any] | None = None,
        **graph_options: Any,
    ) -> Path:
        folder = (models_dir or tmp_path / "models") / name
        folder.mkdir(parents=True, exist_ok=True)
        model = build_generator(**graph_options)
        onnx_path = folder / ONNX_FILENAME
        onnx.save(model, str(onnx_path))
        card = card_for(name, model, onnx_path, **(card_overrides or {}))
        (folder / CARD_FILENAME).write_text(json.dumps(card, indent=2), encoding="utf-8")
        return folder

    return make


GAN = "tiny-gan"  # conv generator, RGB 8x8, latent 16, tanh
VAE = "tiny-vae"  # dense decoder, grayscale 6x6, latent 4, sigmoid
CGAN = "tiny-cgan"  # class-conditional conv generator, grayscale 8x8, latent 6, 3 classes


def make_conditional(make_model: ModelFactory, root: Path, name: str = CGAN) -> Path:
    return make_model(
        name, root, latent_dim=6, height=8, width=8, channels=1, conv=True, num_classes=3
    )


@pytest.fixture
def models_dir(tmp_path: Path, make_model: ModelFactory) -> Path:
    root = tmp_path / "models"
    make_model(GAN, root, latent_dim=16, height=8, width=8, channels=3, conv=True)
    make_model(VAE, root, latent_dim=4, height=6, width=6, channels=1, activation="Sigmoid")
    return root


@pytest.fixture(autouse=True)
def _no_imagegen_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from the developer's shell."""
    import os

    for key in list(os.environ):
        if key.startswith("IMAGEGEN_"):
            monkeypatch.delenv(key)
    # Except one: apps built in tests serve gRPC only where a test asks for it (the default
    # port is machine-wide, and tritonclient's protobuf messages, imported by the v2 tests,
    # cannot share a process with the server's).
    monkeypatch.setenv("IMAGEGEN_GRPC_PORT", "0")


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(models_dir: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "models_dir": models_dir,
            "max_batch_delay_ms": 2.0,
            "intra_op_threads": 1,
        }
        options.update(overrides)
        return Settings(**options)

    return make


@asynccontextmanager
async def serve_in_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app with its lifespan running, and an HTTP client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_client(make_settings: SettingsFactory) -> ClientFactory:
    """`async with make_client(**settings_overrides) as client:` a fresh app and its client."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve_in_process(make_settings(**overrides))

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as http:
        yield http
