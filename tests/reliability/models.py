"""Tiny real ONNX generators for the reliability tier: a deliberately slow one, a faulty one.

They follow the model artifact contract (latent `[N, d]` float32 in, NHWC float32 out, a
card with the file's sha256), so the service loads them like any exported model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.runtime.card import CARD_FILENAME, ONNX_FILENAME
from tests.service.conftest import OPSET, build_generator, card_for

LATENT_DIM = 16
HEIGHT, WIDTH, CHANNELS = 8, 8, 3
POISON_ABS = 1000.0  # the faulty model fails a batch holding a latent with |latent[0]| >= this


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    scale = 1.0 / np.sqrt(shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _graph_io(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "reliability_generator",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", LATENT_DIM])],
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["batch", HEIGHT, WIDTH, CHANNELS]
            )
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def build_slow_generator(hidden: int = 1024, layers: int = 160) -> onnx.ModelProto:
    """latent -> `layers` x (MatMul hidden x hidden, Tanh) -> image: a few ms of CPU per image.

    The layers share one weight, so the file stays small while every row costs
    `layers * hidden**2` multiply-adds.
    """
    rng = np.random.default_rng(0)
    pixels = HEIGHT * WIDTH * CHANNELS
    initializers = [
        _weight(rng, "w_in", LATENT_DIM, hidden),
        _weight(rng, "w_hidden", hidden, hidden),
        _weight(rng, "w_out", hidden, pixels),
        numpy_helper.from_array(np.array([-1, HEIGHT, WIDTH, CHANNELS], dtype=np.int64), "nhwc"),
    ]
    nodes = [helper.make_node("MatMul", ["latent", "w_in"], ["h0"])]
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{layer}", "w_hidden"], [f"m{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [f"h{layer + 1}"]))
    nodes += [
        helper.make_node("MatMul", [f"h{layers}", "w_out"], ["flat"]),
        helper.make_node("Tanh", ["flat"], ["act"]),
        helper.make_node("Reshape", ["act", "nhwc"], ["image"]),
    ]
    return _graph_io(nodes, initializers)


def build_faulty_generator() -> onnx.ModelProto:
    """A working generator whose run fails inside onnxruntime for a poisoned latent.

    `Gather(zeros[1], int64(|latent[:, 0]| / POISON_ABS))` indexes out of bounds (an
    onnxruntime error) as soon as one row has |latent[0]| >= POISON_ABS; seeds never do.
    """
    rng = np.random.default_rng(1)
    pixels = HEIGHT * WIDTH * CHANNELS
    initializers = [
        _weight(rng, "w", LATENT_DIM, pixels),
        numpy_helper.from_array(np.array([-1, HEIGHT, WIDTH, CHANNELS], dtype=np.int64), "nhwc"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([1.0 / POISON_ABS], dtype=np.float32), "inv"),
        numpy_helper.from_array(np.zeros([1], dtype=np.float32), "zeros"),
        numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "hwc_axes"),
    ]
    nodes = [
        helper.make_node("MatMul", ["latent", "w"], ["flat"]),
        helper.make_node("Tanh", ["flat"], ["act"]),
        helper.make_node("Reshape", ["act", "nhwc"], ["pixels"]),
        # |latent[:, 0]| / POISON_ABS, truncated to int64: 0 for every sane latent.
        helper.make_node("Slice", ["latent", "first", "one", "axis1"], ["col0"]),
        helper.make_node("Abs", ["col0"], ["abs0"]),
        helper.make_node("Mul", ["abs0", "inv"], ["ratio"]),
        helper.make_node("Squeeze", ["ratio", "axis1"], ["ratio_n"]),
        helper.make_node("Cast", ["ratio_n"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["zeros", "index"], ["picked"]),
        helper.make_node("Unsqueeze", ["picked", "hwc_axes"], ["offset"]),
        helper.make_node("Add", ["pixels", "offset"], ["image"]),
    ]
    return _graph_io(nodes, initializers)


def write_model(models_dir: Path, name: str, model: onnx.ModelProto) -> Path:
    """`models_dir/name/{model.onnx, model.json}` with a matching card; the folder."""
    folder = models_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / ONNX_FILENAME
    onnx.save(model, str(onnx_path))
    card = card_for(name, model, onnx_path)
    (folder / CARD_FILENAME).write_text(json.dumps(card, indent=2), encoding="utf-8")
    return folder


def write_tiny(models_dir: Path, name: str = "tiny-gan") -> Path:
    """The service tests' small conv generator (RGB 8x8, latent 16): fast, for input tests."""
    model = build_generator(
        latent_dim=LATENT_DIM, height=HEIGHT, width=WIDTH, channels=CHANNELS, conv=True
    )
    return write_model(models_dir, name, model)
