"""docs/quality.md for a class-conditional model: class fidelity, its bar, and the summary
table beside the unconditional models (no TensorFlow needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from training.report import write_quality_doc

MODELS_DIR = Path(__file__).resolve().parent.parent.parent / "models"


def write_fake_cgan(tmp_path: Path, fidelity: dict[str, Any]) -> str:
    """docs/quality.md for the shipped fashion-gan beside `fake-cgan`, a copy of its card
    made conditional with the class-fidelity report `fidelity`."""
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "fashion-gan", models / "fashion-gan")
    card = json.loads((models / "fashion-gan" / "model.json").read_text())
    card["name"] = "fake-cgan"
    card["conditioning"] = {"input_name": "class_weights", "classes": card["dataset"]["classes"]}
    card["metrics"]["quality"]["generated"]["class_fidelity"] = fidelity
    (models / "fake-cgan").mkdir()
    (models / "fake-cgan" / "model.json").write_text(json.dumps(card))
    return write_quality_doc(models, tmp_path / "docs" / "quality.md")


CLASSES = json.loads((MODELS_DIR / "fashion-gan" / "model.json").read_text())["dataset"]["classes"]


def test_conditional_models_report_class_fidelity_beside_the_others(tmp_path: Path) -> None:
    per_class = {name: 0.95 for name in CLASSES} | {"Shirt": 0.6}
    doc = write_fake_cgan(
        tmp_path, {"per_class": per_class, "mean": 0.914, "min": 0.6, "min_class": "Shirt"}
    )
    assert "| `fake-cgan` | fashion-mnist | yes, 10 classes |" in doc
    assert "| `fashion-gan` | fashion-mnist | no |" in doc
    assert "0.914 / 0.600 |" in doc
    assert "mean **0.914**, lowest 0.600 (Shirt)" in doc
    assert "- met: class fidelity 0.914 >= 0.9 on average" in doc
    assert "- **missed**: no class below 0.75 (lowest 0.600, Shirt)" in doc
    assert "one row per class" in doc
    gan_section = doc.split("## fashion-gan")[1]
    assert "class fidelity" not in gan_section.lower()


def test_class_fidelity_is_shown_beside_the_classifier_on_real_images(tmp_path: Path) -> None:
    doc = write_fake_cgan(
        tmp_path,
        {
            "per_class": {name: 0.95 for name in CLASSES} | {"Shirt": 0.7},
            "mean": 0.925,
            "min": 0.7,
            "min_class": "Shirt",
            "real_test": {
                "per_class": {name: 0.9 for name in CLASSES} | {"Shirt": 0.681},
                "mean": 0.88,
                "min": 0.681,
                "min_class": "Shirt",
            },
        },
    )
    assert "| generated | 0.950 | " in doc
    assert "| real test images (the classifier's own per-class accuracy) | 0.900 |" in doc
    assert "0.681 |" in doc.split("real test images (the classifier")[1].splitlines()[0]
    assert (
        "- **missed**: no class below 0.75 (lowest 0.700, Shirt; the classifier on real Shirt "
        "images: 0.681)" in doc
    )


def test_the_recipe_comparison_joins_the_page_with_its_plot_table_and_notes(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "fashion-gan", models / "fashion-gan")
    out = tmp_path / "docs" / "quality.md"
    assert "Recipe comparison" not in write_quality_doc(models, out)

    recipes = tmp_path / "docs" / "recipes"
    recipes.mkdir()
    point = {"steps": 500, "precision": 0.5, "recall": 0.4, "coverage": 0.3}
    runs = [
        {
            "recipe": recipe,
            "seed": 0,
            "summary": f"{recipe} summary",
            "batch_size": 128,
            "steps_per_second": 1.7,
            "curve": [
                {"cpu_minutes": 5.0, "wall_minutes": 5.1, "frechet_distance": fd, **point},
                {"cpu_minutes": 10.2, "wall_minutes": 10.4, "frechet_distance": fd / 2, **point},
            ],
        }
        for recipe, fd in (("dcgan", 80.0), ("ttur", 60.0))
    ]
    (recipes / "mnist.json").write_text(json.dumps({"dataset": "mnist", "runs": runs}))
    (recipes / "mnist.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (recipes / "mnist.notes.md").write_text("TTUR wins here.\n")
    doc = write_quality_doc(models, out)
    section = doc.split("## Recipe comparison")[1]
    assert "### mnist" in section
    assert "](recipes/mnist.png)" in section
    assert "| recipe | seed | steps per CPU s | FD at 5 min | FD at 10 min |" in section
    # At 10 minutes the last score taken is the 5-minute one (the next came at 10.2).
    assert "| ttur | 0 | 1.70 | 60.0 | 60.0 | 500 | 30.0 | 0.500 |" in section
    assert "- `dcgan`: dcgan summary" in section
    assert section.rstrip().endswith("TTUR wins here.")

    # Long runs' curves (training.compare curves) follow, with their best and last scores.
    long_runs = recipes / "runs"
    long_runs.mkdir()
    curve = [
        {"steps": 3000, "frechet_distance": 40.0, "precision": 0.7, "recall": 0.6},
        {"steps": 6000, "frechet_distance": 20.0, "precision": 0.72, "recall": 0.7},
        {"steps": 9000, "frechet_distance": 25.0, "precision": 0.73, "recall": 0.75},
    ]
    run = {"run": "long", "recipe": "batch32", "batch_size": 32, "curve": curve}
    (long_runs / "model-1.2.0.json").write_text(json.dumps({"title": "A long run", "runs": [run]}))
    (long_runs / "model-1.2.0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    tail = write_quality_doc(models, out).split("## Long runs")[1]
    assert "### A long run" in tail and "](recipes/runs/model-1.2.0.png)" in tail
    assert (
        "- `long` (recipe batch32, batch 32): 3 scores over 9,000 steps; best FD 20.0 at step "
        "6,000, last 25.0 (precision 0.730, recall 0.750)" in tail
    )
