"""docs/quality.md for a class-conditional model: class fidelity, its bar, and the summary
table beside the unconditional models (no TensorFlow needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from training.report import write_quality_doc

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"


def test_conditional_models_report_class_fidelity_beside_the_others(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "fashion-gan", models / "fashion-gan")
    card = json.loads((models / "fashion-gan" / "model.json").read_text())
    classes = card["dataset"]["classes"]
    per_class = {name: 0.95 for name in classes} | {"Shirt": 0.6}
    card["name"] = "fake-cgan"
    card["conditioning"] = {"input_name": "class_weights", "classes": classes}
    card["metrics"]["quality"]["generated"]["class_fidelity"] = {
        "per_class": per_class,
        "mean": 0.914,
        "min": 0.6,
        "min_class": "Shirt",
    }
    (models / "fake-cgan").mkdir()
    (models / "fake-cgan" / "model.json").write_text(json.dumps(card))
    doc = write_quality_doc(models, tmp_path / "docs" / "quality.md")
    assert "| `fake-cgan` | fashion-mnist | yes, 10 classes |" in doc
    assert "| `fashion-gan` | fashion-mnist | no |" in doc
    assert "0.914 / 0.600 |" in doc
    assert "mean **0.914**, lowest 0.600 (Shirt)" in doc
    assert "- met: class fidelity 0.914 >= 0.9 on average" in doc
    assert "- **missed**: no class below 0.75 (lowest 0.600, Shirt)" in doc
    assert "one row per class" in doc
    gan_section = doc.split("## fashion-gan")[1]
    assert "class fidelity" not in gan_section.lower()
