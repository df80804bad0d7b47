"""fp16 variants: real float16 conversion of tiny generators, the parity check against fp32,
the variant's own card, the registry serving it, and the `imagegen fp16` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from typer.testing import CliRunner

from service.cli import app as cli_app
from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ModelCard,
    latent_for_seed,
    sha256_file,
)
from service.runtime.fp16 import ParityError, convert_model_dir, is_variant, variant_name
from service.runtime.providers import plan_providers
from service.runtime.registry import InvalidModel, load_model
from tests.service.conftest import (
    CGAN,
    GAN,
    VAE,
    ClientFactory,
    ModelFactory,
    make_conditional,
)
from tests.service.helpers import decode_png

GAN16 = variant_name(GAN)


def float_types(path: Path) -> set[int]:
    graph = onnx.load(str(path)).graph
    return {init.data_type for init in graph.initializer if init.data_type != TensorProto.INT64}


@pytest.mark.parametrize("name", [GAN, VAE])
def test_variant_is_float16_inside_float32_at_its_edges(models_dir: Path, name: str) -> None:
    target, card = convert_model_dir(models_dir / name)
    assert target == models_dir / f"{name}-fp16"
    onnx_path = target / ONNX_FILENAME
    assert float_types(models_dir / name / ONNX_FILENAME) == {TensorProto.FLOAT}
    assert float_types(onnx_path) == {TensorProto.FLOAT16}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(float)"]
    assert [o.type for o in session.get_outputs()] == ["tensor(float)"]
    # The card on disk is the one returned, and it ties itself to both files.
    assert ModelCard.load(target / CARD_FILENAME) == card
    original = ModelCard.load(models_dir / name / CARD_FILENAME)
    assert card.name == f"{name}-fp16"
    assert card.latent_dim == original.latent_dim and card.image == original.image
    info = card.onnx.model_dump()
    assert info["sha256"] == sha256_file(onnx_path) != original.onnx.sha256
    assert info["precision"] == "fp16" and is_variant(card) and not is_variant(original)
    assert info["converted_from"] == {
        "name": name,
        "version": original.version,
        "sha256": original.onnx.sha256,
    }
    parity = info["parity"]
    assert parity["samples"] == 64 and parity["providers"] == ["CPUExecutionProvider"]
    assert parity["max_uint8_diff"] <= parity["allowed_max_uint8_diff"] == 4
    assert 0 < parity["max_abs_diff"] < 0.05  # really fp16: not bit-identical, but close
    assert "onnxruntime.transformers.float16" in info["producers"]
    assert not list(models_dir.glob(".*partial"))


def test_registry_serves_the_variant_close_to_the_original(models_dir: Path) -> None:
    convert_model_dir(models_dir / GAN)
    plan = plan_providers("cpu")
    fp32 = load_model(models_dir / GAN, plan)
    fp16 = load_model(models_dir / GAN16, plan)
    latents = np.stack([latent_for_seed(seed, fp32.card.latent_dim) for seed in range(100, 132)])
    difference = np.abs(
        fp32.generator.generate(latents).astype(np.int16)
        - fp16.generator.generate(latents).astype(np.int16)
    )
    assert difference.max() <= 4


def scaled_up(make_model: ModelFactory, models_dir: Path, name: str) -> Path:
    """A generator whose activations leave float16's range (about 65504): fp16 must fail."""
    folder = make_model(name, models_dir, latent_dim=16, height=8, width=8, conv=True)
    model = onnx.load(str(folder / ONNX_FILENAME))
    for index, init in enumerate(model.graph.initializer):
        if init.name == "w_dense":
            big = numpy_helper.to_array(init) * np.float32(1e5)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(big, init.name))
    onnx.save(model, str(folder / ONNX_FILENAME))
    card = json.loads((folder / CARD_FILENAME).read_text())
    card["onnx"]["sha256"] = sha256_file(folder / ONNX_FILENAME)
    (folder / CARD_FILENAME).write_text(json.dumps(card))
    return folder


def test_a_variant_that_fails_parity_is_not_written(
    make_model: ModelFactory, models_dir: Path
) -> None:
    source = scaled_up(make_model, models_dir, "overflows")
    with pytest.raises(ParityError, match=r"overflows: fp16 images differ by up to \d+ levels"):
        convert_model_dir(source)
    assert sorted(path.name for path in models_dir.iterdir()) == sorted([GAN, VAE, "overflows"])


def test_a_strict_tolerance_is_enforced(models_dir: Path) -> None:
    with pytest.raises(ParityError, match=r"allowed 0"):
        convert_model_dir(models_dir / GAN, max_uint8_diff=0)
    assert not (models_dir / GAN16).exists()


def test_a_tampered_source_is_refused(models_dir: Path) -> None:
    with (models_dir / GAN / ONNX_FILENAME).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(InvalidModel, match="sha256 is"):
        convert_model_dir(models_dir / GAN)
    assert not (models_dir / GAN16).exists()


def test_a_variant_is_not_converted_again_and_is_kept_unless_overwritten(
    models_dir: Path, tmp_path: Path
) -> None:
    target, _ = convert_model_dir(models_dir / GAN)
    with pytest.raises(InvalidModel, match="already an fp16 variant"):
        convert_model_dir(target)
    with pytest.raises(FileExistsError):
        convert_model_dir(models_dir / GAN)
    convert_model_dir(models_dir / GAN, overwrite=True)
    elsewhere, _ = convert_model_dir(models_dir / GAN, tmp_path / "out")
    assert elsewhere == tmp_path / "out" / GAN16


async def test_the_service_serves_the_variant_under_its_own_name(
    models_dir: Path, make_client: ClientFactory
) -> None:
    convert_model_dir(models_dir / GAN)
    async with make_client() as client:
        listed = [model["name"] for model in (await client.get("/v1/models")).json()["models"]]
        assert set(listed) == {GAN, GAN16, VAE}
        variant = (await client.get(f"/v1/models/{GAN16}")).json()
        assert variant["onnx"]["precision"] == "fp16"
        assert variant["onnx"]["converted_from"]["name"] == GAN
        assert variant["providers"] == ["CPUExecutionProvider"]
        fp32 = await client.post(f"/v1/models/{GAN}/generate", json={"seed": 5})
        fp16 = await client.post(f"/v1/models/{GAN16}/generate", json={"seed": 5})
    assert fp16.status_code == 200 and fp16.headers["x-model"] == GAN16
    difference = decode_png(fp32.content).astype(np.int16) - decode_png(fp16.content)
    assert np.abs(difference).max() <= 4


async def test_a_conditional_model_gets_a_variant_that_keeps_its_classes(
    models_dir: Path, make_model: ModelFactory, make_client: ClientFactory
) -> None:
    source = make_conditional(make_model, models_dir)
    target, card = convert_model_dir(source)
    original = ModelCard.load(source / CARD_FILENAME)
    assert card.conditioning == original.conditioning is not None
    assert card.onnx.model_dump()["parity"]["max_uint8_diff"] <= 4
    session = ort.InferenceSession(str(target / ONNX_FILENAME), providers=["CPUExecutionProvider"])
    assert [i.type for i in session.get_inputs()] == ["tensor(float)", "tensor(float)"]
    variant = variant_name(CGAN)
    async with make_client() as client:
        class_name = original.conditioning.classes[2]
        body = {"seed": 7, "class": class_name}
        fp32 = await client.post(f"/v1/models/{CGAN}/generate", json=body)
        fp16 = await client.post(f"/v1/models/{variant}/generate", json=body)
        unknown = await client.post(
            f"/v1/models/{variant}/generate", json={"seed": 7, "class": "x"}
        )
    assert fp16.status_code == 200 and fp16.headers["x-class"] == class_name
    difference = decode_png(fp32.content).astype(np.int16) - decode_png(fp16.content)
    assert np.abs(difference).max() <= 4
    assert unknown.status_code == 422 and class_name in unknown.json()["error"]["message"]


def test_command_converts_a_models_folder_and_skips_what_exists(
    make_model: ModelFactory, models_dir: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["fp16", "--models-dir", str(models_dir), "--samples", "8"])
    assert result.exit_code == 0, result.output
    assert f"{GAN} -> {models_dir / GAN16 / CARD_FILENAME}: pixels differ by at most" in (
        result.output
    )
    assert (models_dir / f"{VAE}-fp16" / CARD_FILENAME).is_file()
    again = runner.invoke(cli_app, ["fp16", "--models-dir", str(models_dir)])
    assert again.exit_code == 0
    assert f"{GAN}: {models_dir / GAN16} exists, kept" in again.output
    assert "-fp16-fp16" not in again.output
    # A failing model is reported, the others still converted, and the exit status says so.
    scaled_up(make_model, models_dir, "overflows")
    failed = runner.invoke(cli_app, ["fp16", "--models-dir", str(models_dir), "--overwrite"])
    assert failed.exit_code == 1
    assert "overflows: fp16 images differ" in failed.output
    assert not (models_dir / "overflows-fp16").exists()


def test_command_explains_missing_inputs_and_providers(models_dir: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(cli_app, ["fp16"])
    assert nothing.exit_code == 2 and "nothing to convert" in nothing.output
    no_cuda = runner.invoke(cli_app, ["fp16", str(models_dir / GAN), "--providers", "cuda"])
    assert no_cuda.exit_code == 2 and "providers=cuda, but this onnxruntime build" in (
        no_cuda.output
    )


def test_conversion_without_onnx_says_how_to_get_it(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(RuntimeError, match=r"make install-dev.*pip install .* -e '\.\[fp16\]'"):
        convert_model_dir(models_dir / GAN)
