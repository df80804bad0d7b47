"""Write docs/quality.md from the quality reports in the shipped models' cards.

Run after exporting: `python -m training.report` (reads models/*/model.json). Nothing is
re-measured here; every figure is the one the export step measured on the ONNX file.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from service.runtime.card import CARD_FILENAME, SAMPLES_FILENAME, ModelCard

METRICS = (
    ("frechet_distance", "FD", "{:.2f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("class_kl_from_uniform", "KL(classes‖uniform)", "{:.4f}"),
    ("min_class_fraction", "min class", "{:.3f}"),
    ("max_class_fraction", "max class", "{:.3f}"),
)
# KID (with its 95% interval) is shown only for reports that measured it.
KID_METRIC = ("kid", "KID [95% CI]", "{:.4f}")


def reference_rows(quality: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Row labels; older reports built the blurred and class-dropped rows from test images."""
    blur_protocol = quality.get("protocol", {}).get("blur", "test images")
    source = "test" if blur_protocol.startswith("test images") else "train subset"
    return (
        ("real_train_vs_test", "real: train images vs test (floor)"),
        ("blur_sigma_0.5", f"{source} blurred, sigma 0.5"),
        ("blur_sigma_1", f"{source} blurred, sigma 1"),
        ("three_classes_removed", f"{source} without 3 classes"),
    )


def _metrics(with_kid: bool) -> tuple[tuple[str, str, str], ...]:
    return (METRICS[0], KID_METRIC, *METRICS[1:]) if with_kid else METRICS


def _cell(key: str, fmt: str, metrics: dict[str, Any]) -> str:
    if key not in metrics:
        return "-"
    if key == "kid" and "kid_ci95" in metrics:
        low, high = metrics["kid_ci95"]
        return f"{fmt.format(metrics[key])} [{low:.4f}, {high:.4f}]"
    return fmt.format(metrics[key])


def _row(label: str, metrics: dict[str, Any], with_kid: bool = False) -> str:
    cells = [_cell(key, fmt, metrics) for key, _, fmt in _metrics(with_kid)]
    return f"| {label} | " + " | ".join(cells) + " |"


def _header(with_kid: bool = False) -> list[str]:
    names = [name for _, name, _ in _metrics(with_kid)]
    return ["| samples | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]


def quality_checks(card: ModelCard, others: dict[str, ModelCard]) -> list[tuple[str, bool]]:
    """The issue's quality bar for this model, each as (statement, met)."""
    quality = card.metrics.get("quality", {})
    gen, ref = quality.get("generated", {}), quality.get("reference", {})
    if not gen:
        return []
    fd = gen["frechet_distance"]
    checks: list[tuple[str, bool]] = []
    memo = gen.get("memorisation", {})
    if card.kind == "gan":
        removed = ref["three_classes_removed"]["frechet_distance"]
        checks += [
            (
                f"FD {fd:.2f} <= half the 3-classes-removed point ({removed / 2:.2f})",
                fd <= removed / 2,
            ),
            (f"precision {gen['precision']:.3f} >= 0.65", gen["precision"] >= 0.65),
            (f"recall {gen['recall']:.3f} >= 0.6", gen["recall"] >= 0.6),
            (f"coverage {gen['coverage']:.3f} >= 0.6", gen["coverage"] >= 0.6),
            (
                f"every class between 5% and 15% (min {gen['min_class_fraction']:.3f}, "
                f"max {gen['max_class_fraction']:.3f})",
                gen["min_class_fraction"] >= 0.05 and gen["max_class_fraction"] <= 0.15,
            ),
            (
                f"FD {fd:.2f} vs the sigma-0.5 blur point "
                f"{ref['blur_sigma_0.5']['frechet_distance']:.2f} (aim)",
                fd <= ref["blur_sigma_0.5"]["frechet_distance"],
            ),
        ]
        vae = next(
            (
                o
                for o in others.values()
                if o.kind == "vae" and o.dataset.get("name") == card.dataset.get("name")
            ),
            None,
        )
        if vae is not None and vae.metrics.get("quality"):
            vae_fd = vae.metrics["quality"]["generated"]["frechet_distance"]
            checks.append((f"GAN FD {fd:.2f} < VAE ({vae.name}) FD {vae_fd:.2f}", fd < vae_fd))
    else:
        blur1 = ref["blur_sigma_1"]["frechet_distance"]
        present = sum(1 for v in gen["class_histogram"].values() if v > 0)
        checks += [
            (f"FD {fd:.2f} < sigma-1 blur point {blur1:.2f}", fd < blur1),
            (f"all 10 classes present ({present} present)", present == 10),
        ]
    fidelity = gen.get("class_fidelity")
    if fidelity:
        checks += [
            (f"class fidelity {fidelity['mean']:.3f} >= 0.9 on average", fidelity["mean"] >= 0.9),
            (
                f"no class below 0.75 (lowest {fidelity['min']:.3f}, {fidelity['min_class']}"
                + _real_accuracy_note(fidelity)
                + ")",
                fidelity["min"] >= 0.75,
            ),
        ]
    if memo:
        checks.append(
            (
                f"no memorisation ({memo['fraction_below_threshold']:.4f} of samples closer to a "
                f"train image than the 1st percentile of test images; test "
                f"{memo['test_fraction_below_threshold']:.4f})",
                not memo["suspected"],
            )
        )
    return checks


def ablation_rows(ablation: dict[str, Any], with_kid: bool) -> list[str]:
    """The EMA ablation's rows; cards from before BatchNorm recomputation have two."""
    if "ema_copied_bn" not in ablation:
        return [
            _row("EMA generator (served)", ablation["ema"], with_kid),
            _row("raw generator", ablation["raw"], with_kid),
        ]
    return [
        _row("EMA generator, BatchNorm statistics recomputed (served)", ablation["ema"], with_kid),
        _row(
            "EMA generator, BatchNorm statistics copied from the live generator",
            ablation["ema_copied_bn"],
            with_kid,
        ),
        _row("raw generator", ablation["raw"], with_kid),
    ]


def model_section(
    card: ModelCard, model_dir: Path, docs_dir: Path, others: dict[str, ModelCard]
) -> list[str]:
    quality = card.metrics.get("quality")
    samples = Path(os.path.relpath(model_dir / SAMPLES_FILENAME, docs_dir))
    training = card.training
    lines = [
        f"## {card.name} ({card.kind}, version {card.version})",
        "",
        card.description,
        "",
        f"Trained {training.get('epochs')} epochs ({training.get('steps')} steps, "
        f"{training.get('seconds', 0) / 60:.0f} min on {training.get('machine', '?')}), "
        f"data: {card.dataset.get('source')} ({card.dataset.get('train_size')} train / "
        f"{card.dataset.get('test_size')} test); code {training.get('code_revision')}.",
        "",
        (
            f"![{card.name} samples, one row per class: row c holds seeds c, c + "
            f"{card.num_classes}, c + {2 * card.num_classes}, ...]({samples})"
            if card.conditioning is not None
            else f"![{card.name} samples, seeds 0..63]({samples})"
        ),
        "",
    ]
    if not quality:
        return [*lines, "_Not evaluated yet._", ""]
    kid = "kid" in quality["generated"]
    lines += [
        f"Evaluated on the ONNX file: {quality['num_samples']} samples "
        f"({quality.get('latents', '')}); "
        f"classifier {quality['classifier'].get('version')} "
        f"(test accuracy {quality['classifier'].get('test_accuracy', 0):.4f}).",
        "",
        *_header(kid),
        _row(f"**{card.name}**", quality["generated"], kid),
        *[_row(label, quality["reference"][key], kid) for key, label in reference_rows(quality)],
        "",
    ]
    fidelity = quality["generated"].get("class_fidelity")
    if fidelity:
        per_class = fidelity["per_class"]
        accuracy = quality["classifier"].get("test_accuracy", 0)
        lines += [
            f"Class fidelity: of the images generated for class c, the share that the "
            f"evaluator's classifier labels c (classes uniform, seed s as class s % "
            f"{card.num_classes}): mean **{fidelity['mean']:.3f}**, lowest "
            f"{fidelity['min']:.3f} ({fidelity['min_class']}). For reference, the classifier "
            f"labels {accuracy:.4f} of the real test images correctly.",
            "",
            "| | " + " | ".join(per_class) + " |",
            "|---|" + "---:|" * len(per_class),
            "| generated | " + " | ".join(f"{v:.3f}" for v in per_class.values()) + " |",
        ]
        real = fidelity.get("real_test")
        if real:
            lines.append(
                "| real test images (the classifier's own per-class accuracy) | "
                + " | ".join(f"{real['per_class'].get(name, 0):.3f}" for name in per_class)
                + " |"
            )
        lines.append("")
    ablation = card.metrics.get("ema_ablation")
    if ablation:
        lines += [
            "What the EMA of the generator's weights buys, same checkpoint, same evaluator "
            f"({ablation.get('how', '')}):",
            "",
            *_header(kid),
            *ablation_rows(ablation, kid),
            "",
        ]
    checks = quality_checks(card, others)
    if checks:
        lines += ["Quality bar:", ""]
        lines += [f"- {'met' if ok else '**missed**'}: {text}" for text, ok in checks]
        lines.append("")
    return lines


def summary_table(cards: dict[str, ModelCard]) -> list[str]:
    """Every model side by side: conditional beside unconditional, one data set after another."""
    lines = [
        "## All models",
        "",
        "| model | data set | conditional | FD | precision | recall | coverage | "
        "class fidelity (mean / lowest) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for name, card in sorted(cards.items(), key=lambda kv: (kv[1].dataset.get("name", ""), kv[0])):
        gen = card.metrics.get("quality", {}).get("generated")
        if not gen:
            continue
        fidelity = gen.get("class_fidelity")
        lines.append(
            f"| `{name}` | {card.dataset.get('name')} | "
            f"{'yes, ' + str(card.num_classes) + ' classes' if card.conditioning else 'no'} | "
            f"{gen['frechet_distance']:.2f} | {gen['precision']:.3f} | {gen['recall']:.3f} | "
            f"{gen['coverage']:.3f} | "
            + (f"{fidelity['mean']:.3f} / {fidelity['min']:.3f} |" if fidelity else "- |")
        )
    return [*lines, ""]


def _real_accuracy_note(fidelity: dict[str, Any]) -> str:
    """'; the classifier on real Shirt images: 0.731' for the lowest class, when the report
    has the classifier's per-class accuracy on real test images."""
    real = fidelity.get("real_test")
    name = fidelity["min_class"]
    if not real or name not in real["per_class"]:
        return ""
    return f"; the classifier on real {name} images: {real['per_class'][name]:.3f}"


def figure(results: Path, alt: str, out_dir: Path) -> list[str]:
    """The markdown image of the plot beside a results JSON file (none if it has none)."""
    plot = results.with_suffix(".png")
    return [f"![{alt}]({os.path.relpath(plot, out_dir)})", ""] if plot.is_file() else []


def recipe_section(recipes_dir: Path, out_dir: Path) -> list[str]:
    """The recipe comparisons (`python -m training.compare report` writes their JSON and
    plot to `recipes_dir`; `<dataset>.notes.md` beside them holds what they showed)."""
    from training.compare import comparison_table

    results = sorted(recipes_dir.glob("*.json"))
    if not results:
        return []
    lines = [
        "## Recipe comparison",
        "",
        "Each candidate recipe changes one thing in the shipped one (`training/recipes.py`) and",
        "trains for the same time on this machine: `python -m training.compare run` runs two at a",
        "time, each pinned to its own core with one TensorFlow thread, and scores the served",
        "network (2,000 EMA samples against the validation split) every ~250 steps. Time is the",
        "training process's CPU minutes (scoring not counted), which equals wall-clock on an idle",
        "core and does not stretch when the machine is shared. FD here is the validation FD of",
        "2,000 samples, higher than the 10,000-sample test FD of the cards above.",
        "",
    ]
    for path in results:
        data = json.loads(path.read_text())
        dataset = data["dataset"]
        lines += [f"### {dataset}", ""]
        lines += figure(path, f"validation FD against training minutes, {dataset}", out_dir)
        lines += [*comparison_table(data), ""]
        summaries = {run["recipe"]: run["summary"] for run in data["runs"]}
        lines += [f"- `{name}`: {summary}" for name, summary in summaries.items()]
        lines.append("")
        notes = path.with_suffix(".notes.md")
        if notes.is_file():
            lines += [notes.read_text(encoding="utf-8").strip(), ""]
    return lines


def long_runs_section(runs_dir: Path, out_dir: Path) -> list[str]:
    """The long runs' validation curves (`python -m training.compare curves` writes their
    JSON and plot to `runs_dir`): what a shipped model's run looked like, kept after the
    run folder is gone."""
    results = sorted(runs_dir.glob("*.json"))
    if not results:
        return []
    lines = [
        "## Long runs",
        "",
        "Validation FD and precision (2,000 EMA samples against the validation split) against",
        "training steps, shaded where the learning rates decay to zero; the points are in the",
        "JSON file beside each plot.",
        "",
    ]
    for path in results:
        data = json.loads(path.read_text())
        lines += [f"### {data['title']}", "", *figure(path, data["title"], out_dir)]
        for run in data["runs"]:
            if not run["curve"]:
                continue
            best = min(run["curve"], key=lambda p: p["frechet_distance"])
            last = run["curve"][-1]
            lines.append(
                f"- `{run['run']}` (recipe {run['recipe']}, batch {run['batch_size']}): "
                f"{len(run['curve'])} scores over {last['steps']:,} steps; best FD "
                f"{best['frechet_distance']:.1f} at step {best['steps']:,}, last "
                f"{last['frechet_distance']:.1f} (precision {last['precision']:.3f}, recall "
                f"{last['recall']:.3f})"
            )
        lines.append("")
    return lines


def write_quality_doc(models_dir: Path, out: Path, recipes_dir: Path | None = None) -> str:
    cards = {
        path.parent.name: ModelCard.load(path)
        for path in sorted(models_dir.glob(f"*/{CARD_FILENAME}"))
    }
    lines = [
        "# Model quality",
        "",
        "Every figure below was measured by `imagegen evaluate` (training/evaluate.py) on the",
        "exported ONNX file that the service serves, and is copied from the model's card",
        "(`models/<name>/model.json`, `metrics.quality`). Regenerate this page with",
        "`python -m training.report` after `imagegen export`; rerun one evaluation with",
        "`imagegen evaluate models/<name>`.",
        "",
        "How to read it: features are the penultimate layer of a classifier trained by the",
        "project on the same data set. FD is the Frechet distance of those features between",
        "the generated images and the test set; precision/recall (k=3) and density/coverage",
        "(k=5) are the k-NN measures of Kynkäänniemi et al. and Naeem et al. The four real",
        "rows are the calibration points from the same evaluator and run: a perfect generator",
        "scores like the first row; blurred and class-dropped real sets show what visible",
        "flaws cost. The row labels say which images they were built from: reports made before",
        "issue 11 blurred the test images themselves (which inflates those rows' precision and",
        "density), newer ones a train subset disjoint from the test set, and add KID with its",
        "95% interval beside FD.",
        "",
    ]
    lines += summary_table(cards)
    for name, card in cards.items():
        lines += model_section(card, models_dir / name, out.parent, cards)
    recipes_dir = recipes_dir or out.parent / "recipes"
    lines += recipe_section(recipes_dir, out.parent)
    lines += long_runs_section(recipes_dir / "runs", out.parent)
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    write_quality_doc(args.models_dir, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
