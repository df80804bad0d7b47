"""Model faults: broken artifacts are refused with messages naming the file, an onnxruntime
error inside a batch fails only the requests it should, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from pathlib import Path

import httpx

from service.runtime.card import CARD_FILENAME, ONNX_FILENAME, sha256_file
from tests.reliability.conftest import TINY, Launcher
from tests.reliability.harness import Outcome, launch, metric_sum, request, warnings_in
from tests.reliability.models import (
    LATENT_DIM,
    POISON_ABS,
    build_faulty_generator,
    write_model,
    write_tiny,
)
from tests.reliability.report import record

FAULTY = "faulty-gan"
STARTUP_TIMEOUT_S = 90


def _card(folder: Path) -> dict[str, object]:
    card: dict[str, object] = json.loads((folder / CARD_FILENAME).read_text())
    return card


def _write_card(folder: Path, card: dict[str, object]) -> None:
    (folder / CARD_FILENAME).write_text(json.dumps(card))


def _broken_models(root: Path) -> dict[str, str]:
    """Model folders broken in every way we know; name -> what the message must mention."""
    expected: dict[str, str] = {}
    # Bytes flipped after export: the digest no longer matches the card.
    folder = write_tiny(root, "flipped-bytes")
    data = bytearray((folder / ONNX_FILENAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILENAME).write_bytes(bytes(data))
    expected["flipped-bytes"] = "sha256 is"
    # Garbage that even matches its card's digest: onnxruntime itself refuses it.
    folder = write_tiny(root, "garbage")
    (folder / ONNX_FILENAME).write_bytes(b"\x08\x07" + struct.pack("<Q", 2**62) + b"garbage")
    card = _card(folder)
    card["onnx"] = {**card["onnx"], "sha256": sha256_file(folder / ONNX_FILENAME)}  # type: ignore[dict-item]
    _write_card(folder, card)
    expected["garbage"] = "onnxruntime cannot load it"
    # Another model's file dropped in (swapped): digest mismatch ...
    folder = write_tiny(root, "swapped")
    shutil.copy(root / FAULTY / ONNX_FILENAME, folder / ONNX_FILENAME)
    expected["swapped"] = "sha256 is"
    # ... and swapped with the card's digest updated: the graph's names differ from the card.
    folder = write_model(root, "swapped-resealed", build_faulty_generator())
    card = _card(folder)
    card["input_name"] = "z"
    _write_card(folder, card)
    expected["swapped-resealed"] = "card says input_name='z'"
    # Cards: missing, not JSON, wrong values, another model's card.
    folder = write_tiny(root, "no-card")
    (folder / CARD_FILENAME).unlink()
    expected["no-card"] = "no-card/model.json: missing"
    folder = write_tiny(root, "not-json")
    (folder / CARD_FILENAME).write_text("{not json")
    expected["not-json"] = "invalid model card"
    folder = write_tiny(root, "wrong-card")
    card = _card(folder)
    card["latent_dim"] = LATENT_DIM + 1
    _write_card(folder, card)
    expected["wrong-card"] = f"card needs float32 [?, {LATENT_DIM + 1}]"
    folder = write_tiny(root, "foreign-card")
    shutil.copy(root / TINY / CARD_FILENAME, folder / CARD_FILENAME)
    expected["foreign-card"] = "differs from its folder name"
    folder = write_tiny(root, "no-onnx")
    (folder / ONNX_FILENAME).unlink()
    expected["no-onnx"] = "missing"
    return expected


def _healthy(root: Path) -> None:
    write_tiny(root, TINY)
    write_model(root, FAULTY, build_faulty_generator())


def test_broken_artifacts_stop_start_up_naming_every_file(tmp_path: Path) -> None:
    root = tmp_path / "models"
    _healthy(root)
    expected = _broken_models(root)
    server = launch(root, tmp_path / "refused.log")
    assert server.process.wait(timeout=STARTUP_TIMEOUT_S) == 2  # an operator error
    log = server.log()
    for name, mention in expected.items():
        lines = [line for line in log.splitlines() if f"{name}/" in line and mention in line]
        assert lines, f"no message names {name} with {mention!r}:\n{log}"
    assert "refusing to start" in log and "Traceback" not in log


async def test_broken_artifacts_are_skipped_and_healthy_models_served(
    serve: Launcher, tmp_path: Path
) -> None:
    root = tmp_path / "mixed"
    _healthy(root)
    expected = _broken_models(root)
    server = serve(models_dir=root, skip_invalid_models=True)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        names = [m["name"] for m in (await http.get("/v1/models")).json()["models"]]
        assert names == [FAULTY, TINY]
        assert (await http.get("/readyz")).status_code == 200
        for name in expected:
            response = await http.post(f"/v1/models/{name}/generate", json={"seed": 1})
            assert response.status_code == 404, response.text
    errors = [line for line in server.log().splitlines() if "invalid model:" in line]
    assert len(errors) == len(expected), errors
    record(
        "model_faults_start_up", broken_artifacts=len(expected), refused_with_message=len(errors)
    )


async def test_an_onnxruntime_error_fails_only_its_requests_and_the_server_recovers(
    serve: Launcher, tmp_path: Path
) -> None:
    root = tmp_path / "runtime"
    _healthy(root)
    server = serve(models_dir=root, max_batch_size=16, max_batch_delay_ms=20)
    port = server.port
    poison = [POISON_ABS * 5] + [0.0] * (LATENT_DIM - 1)

    def post(model: str, body: dict[str, object]) -> asyncio.Task[Outcome]:
        payload = json.dumps(body).encode()
        return asyncio.create_task(
            request("POST", port, f"/v1/models/{model}/generate", payload, timeout_s=120)
        )

    rounds = 5
    poisoned, innocent, healthy = [], [], []
    for round_ in range(rounds):
        # Poisoned and clean requests arrive together, so they share batches.
        poisoned += [post(FAULTY, {"latent": poison}) for _ in range(2)]
        innocent += [post(FAULTY, {"seed": round_ * 100 + i}) for i in range(6)]
        healthy += [post(TINY, {"seed": round_ * 100 + i}) for i in range(6)]
        await asyncio.sleep(0.05)
    poisoned_out = [await t for t in poisoned]
    innocent_out = [await t for t in innocent]
    healthy_out = [await t for t in healthy]

    for outcome in poisoned_out:
        assert outcome.status == 500, outcome.status
        error = json.loads(outcome.body)["error"]
        assert error["type"] == "inference_failed"
        assert FAULTY in error["message"]
    assert all(o.status == 200 for o in healthy_out)
    assert all(o.status == 200 for o in innocent_out), [o.status for o in innocent_out]

    # A file swapped or corrupted on disk under a running server changes nothing: models are
    # verified and loaded once at start-up (a restart would refuse the file, see above).
    (root / TINY / ONNX_FILENAME).write_bytes(b"corrupted while serving")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
        assert (await http.get("/readyz")).status_code == 200
        after = await http.post(f"/v1/models/{FAULTY}/generate", json={"seed": 1})
        assert after.status_code == 200
        still = await http.post(f"/v1/models/{TINY}/generate", json={"seed": 1})
        assert still.status_code == 200
        samples = server.metrics()
    assert metric_sum(samples, "imagegen_queue_depth_images", model=FAULTY) == 0
    log = server.log()
    assert "Gather" in log and "inference failed" in log  # the cause is in the log
    # Every warning or error is about the faulty model (ours or onnxruntime's own line).
    leveled = [line for line in warnings_in(log) if not line.startswith("Traceback")]
    assert all(FAULTY in line or "Gather" in line for line in leveled), leveled
    record(
        "model_faults_runtime",
        poisoned_500=len(poisoned_out),
        innocent_same_model_ok=sum(1 for o in innocent_out if o.status == 200),
        healthy_model_ok=sum(1 for o in healthy_out if o.status == 200),
    )
