"""Registry checks on tiny real ONNX models: every mismatch is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    latent_for_seed,
    sha256_file,
    to_uint8,
)
from service.runtime.providers import plan_providers
from service.runtime.registry import InvalidModel, ModelLoadError, load_model, load_models
from tests.service.conftest import ModelFactory

CPU_PLAN = plan_providers("cpu")


def edit_card(folder: Path, **changes: Any) -> None:
    card_path = folder / CARD_FILENAME
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


def test_valid_model_loads_warm_on_cpu(make_model: ModelFactory) -> None:
    folder = make_model("good", latent_dim=6, height=4, width=2, channels=3)
    model = load_model(folder, CPU_PLAN, max_batch_size=8)
    assert model.name == "good"
    assert model.providers == ["CPUExecutionProvider"]
    images = model.generator.generate(np.stack([latent_for_seed(s, 6) for s in range(3)]))
    assert images.shape == (3, 4, 2, 3)
    assert images.dtype == np.uint8


def test_output_is_the_card_range_mapped_to_uint8(make_model: ModelFactory) -> None:
    folder = make_model("vae", latent_dim=4, channels=1, activation="Sigmoid")
    model = load_model(folder, CPU_PLAN)
    latents = np.stack([latent_for_seed(1, 4)])
    raw = model.generator.run_raw(latents)
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    np.testing.assert_array_equal(model.generator.generate(latents), to_uint8(raw, (0.0, 1.0)))


def test_wrong_sha256_is_refused_naming_the_file(make_model: ModelFactory) -> None:
    folder = make_model("m")
    edit_card(folder, onnx={"opset": 17, "sha256": "0" * 64})
    with pytest.raises(
        InvalidModel, match=r"sha256 is [0-9a-f]{64}, but model.json says 0{64}"
    ) as caught:
        load_model(folder, CPU_PLAN)
    assert caught.value.path == folder / ONNX_FILENAME


def test_corrupted_file_is_refused(make_model: ModelFactory) -> None:
    folder = make_model("m")
    onnx_path = folder / ONNX_FILENAME
    onnx_path.write_bytes(onnx_path.read_bytes()[:50] + b"\x00garbage")
    edit_card(folder, onnx={"opset": 17, "sha256": sha256_file(onnx_path)})
    with pytest.raises(InvalidModel, match=r"model.onnx: onnxruntime cannot load it"):
        load_model(folder, CPU_PLAN)


def test_onnx_file_without_a_card_is_refused_not_ignored(
    make_model: ModelFactory, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    make_model("good", root)
    (make_model("uncarded", root) / CARD_FILENAME).unlink()
    with pytest.raises(ModelLoadError, match=r"uncarded/model.json: missing"):
        load_models(root, CPU_PLAN)
    result = load_models(root, CPU_PLAN, skip_invalid=True)
    assert list(result.models) == ["good"]
    assert "uncarded/model.json: missing" in str(result.invalid[0])


def test_missing_onnx_file_is_refused(make_model: ModelFactory) -> None:
    folder = make_model("m")
    (folder / ONNX_FILENAME).unlink()
    with pytest.raises(InvalidModel, match=r"model.onnx: missing"):
        load_model(folder, CPU_PLAN)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "diffusion"}, "kind"),
        ({"latent_dim": 0}, "latent_dim"),
        (
            {"image": {"height": 4, "width": 4, "channels": 3, "output_range": [1, -1]}},
            "output_range",
        ),
        ({"onnx": {"opset": 17, "sha256": "not-hex"}}, "onnx.sha256"),
        ({"name": "other"}, "differs from its folder name"),
    ],
)
def test_invalid_card_is_refused_naming_model_json(
    make_model: ModelFactory, changes: dict[str, Any], message: str
) -> None:
    folder = make_model("m")
    edit_card(folder, **changes)
    with pytest.raises(InvalidModel, match=message) as caught:
        load_model(folder, CPU_PLAN)
    assert caught.value.path == folder / CARD_FILENAME


def test_card_that_is_not_json_is_refused(make_model: ModelFactory) -> None:
    folder = make_model("m")
    (folder / CARD_FILENAME).write_text("{not json")
    with pytest.raises(InvalidModel, match=r"model.json: invalid model card"):
        load_model(folder, CPU_PLAN)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"latent_dim": 9},
            r"input 'latent' is tensor\(float\) \[\?, 8\], but the card needs float32 \[\?, 9\]",
        ),
        ({"input_name": "z"}, r"graph inputs are \['latent'\], but the card says input_name='z'"),
        (
            {"output_name": "img"},
            r"graph outputs are \['image'\], but the card says output_name='img'",
        ),
        (
            {"image": {"height": 5, "width": 4, "channels": 3, "output_range": [-1, 1]}},
            r"output 'image' is tensor\(float\) \[\?, 4, 4, 3\], "
            r"but the card needs float32 \[\?, 5, 4, 3\]",
        ),
    ],
)
def test_signature_mismatch_is_refused(
    make_model: ModelFactory, changes: dict[str, Any], message: str
) -> None:
    folder = make_model("m", latent_dim=8, height=4, width=4, channels=3)
    edit_card(folder, **changes)
    with pytest.raises(InvalidModel, match=message) as caught:
        load_model(folder, CPU_PLAN)
    assert caught.value.path == folder / ONNX_FILENAME


def test_fixed_batch_axis_is_refused(make_model: ModelFactory) -> None:
    folder = make_model("m", fixed_batch=1)
    with pytest.raises(InvalidModel, match="dynamic batch axis"):
        load_model(folder, CPU_PLAN)


def test_one_invalid_model_stops_start_up_by_default(
    make_model: ModelFactory, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    make_model("good", root)
    bad = make_model("bad", root)
    edit_card(bad, latent_dim=3)
    with pytest.raises(ModelLoadError, match="refusing to start") as caught:
        load_models(root, CPU_PLAN)
    assert str(bad / ONNX_FILENAME) in str(caught.value)


def test_invalid_models_can_be_skipped(make_model: ModelFactory, tmp_path: Path) -> None:
    root = tmp_path / "models"
    make_model("good", root)
    bad = make_model("bad", root)
    edit_card(bad, latent_dim=3)
    result = load_models(root, CPU_PLAN, skip_invalid=True)
    assert list(result.models) == ["good"]
    assert [error.path for error in result.invalid] == [bad / ONNX_FILENAME]


def test_no_models_is_a_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "not-a-model").mkdir()
    with pytest.raises(ModelLoadError, match="no models in"):
        load_models(tmp_path / "empty", CPU_PLAN)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_models(tmp_path / "missing", CPU_PLAN)


def test_padded_runs_give_the_same_rows(make_model: ModelFactory) -> None:
    folder = make_model("m", latent_dim=16, height=8, width=8, channels=3, conv=True)
    plain = load_model(folder, CPU_PLAN, batch_padding="never", max_batch_size=4).generator
    padded = load_model(folder, CPU_PLAN, batch_padding="always", max_batch_size=4).generator
    assert plain.pad_to_rows is None and padded.pad_to_rows == 4
    latents = np.stack([latent_for_seed(s, 16) for s in range(9)])
    np.testing.assert_array_equal(plain.run_raw(latents), padded.run_raw(latents))


# -- class-conditional models: the second input is checked against the card ---------------


def test_conditional_model_loads_and_needs_its_class_weights(make_model: ModelFactory) -> None:
    folder = make_model("cond", latent_dim=5, height=4, width=4, channels=1, num_classes=4)
    model = load_model(folder, CPU_PLAN, max_batch_size=4)
    assert model.card.conditioning is not None and model.card.num_classes == 4
    latents = np.stack([latent_for_seed(s, 5) for s in range(2)])
    weights = np.eye(4, dtype=np.float32)[[0, 3]]
    images = model.generator.generate(latents, weights)
    assert images.shape == (2, 4, 4, 1)
    # The class input matters: the same latents as other classes are other images.
    assert not np.array_equal(images, model.generator.generate(latents, weights[::-1].copy()))
    with pytest.raises(ValueError, match="needs class weights"):
        model.generator.generate(latents)
    with pytest.raises(ValueError, match=r"class weights have shape \[2, 3\], expected \[2, 4\]"):
        model.generator.generate(latents, weights[:, :3].copy())


def test_unconditional_generator_takes_no_class_weights(make_model: ModelFactory) -> None:
    model = load_model(make_model("plain", latent_dim=3), CPU_PLAN)
    with pytest.raises(ValueError, match="takes no class weights"):
        model.generator.generate(np.zeros((1, 3), np.float32), np.ones((1, 2), np.float32))


@pytest.mark.parametrize(
    ("conditioning", "message"),
    [
        (
            {"input_name": "labels", "classes": ["a", "b", "c"]},
            r"graph inputs are \['class_weights', 'latent'\], but the card says "
            r"input_name='latent' and conditioning.input_name='labels'",
        ),
        (
            {"input_name": "class_weights", "classes": ["a", "b"]},
            r"class input 'class_weights' is tensor\(float\) \[\?, 3\], but the card "
            r"\(2 classes\) needs float32 \[\?, 2\]",
        ),
        (
            None,
            r"graph inputs are \['class_weights', 'latent'\], but the card says "
            r"input_name='latent' and has no conditioning block",
        ),
    ],
)
def test_conditioning_mismatch_is_refused(
    make_model: ModelFactory, conditioning: dict[str, Any] | None, message: str
) -> None:
    folder = make_model("cond", latent_dim=5, num_classes=3)
    card = json.loads((folder / CARD_FILENAME).read_text())
    if conditioning is None:
        del card["conditioning"]
    else:
        card["conditioning"] = conditioning
    (folder / CARD_FILENAME).write_text(json.dumps(card))
    with pytest.raises(InvalidModel, match=message) as caught:
        load_model(folder, CPU_PLAN)
    assert caught.value.path == folder / ONNX_FILENAME


def test_a_conditioning_block_on_a_one_input_graph_is_refused(make_model: ModelFactory) -> None:
    folder = make_model("plain", latent_dim=3)
    edit_card(folder, conditioning={"input_name": "class_weights", "classes": ["a", "b"]})
    with pytest.raises(InvalidModel, match=r"graph inputs are \['latent'\], but the card says"):
        load_model(folder, CPU_PLAN)


@pytest.mark.parametrize(
    ("conditioning", "message"),
    [
        ({"input_name": "c", "classes": ["a", "A"]}, "unique"),
        ({"input_name": "c", "classes": ["only"]}, "at least 2"),
        ({"input_name": "c", "classes": ["a", " "]}, "must not be empty"),
        ({"input_name": "c", "classes": ["1", "0"]}, "numeric class name must equal its index"),
        ({"input_name": "latent", "classes": ["a", "b"]}, "must differ"),
        ({"classes": ["a", "b"]}, "input_name"),
    ],
)
def test_invalid_conditioning_blocks_are_refused(
    make_model: ModelFactory, conditioning: dict[str, Any], message: str
) -> None:
    folder = make_model("cond", latent_dim=5, num_classes=2)
    edit_card(folder, conditioning=conditioning)
    with pytest.raises(InvalidModel, match=f"invalid model card.*{message}"):
        load_model(folder, CPU_PLAN)
