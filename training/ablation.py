"""Measure what a GAN's EMA generator buys over its raw generator, and record it in the card.

    python -m training.ablation runs/fashion-mnist-gan models/fashion-gan

Both networks come from the same checkpoint and are scored by the same evaluator on the
same seeds; the result goes into the card as `metrics.ema_ablation` (docs/quality.md shows it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.runtime.card import CARD_FILENAME, ModelCard

KEYS = (
    "frechet_distance",
    "precision",
    "recall",
    "density",
    "coverage",
    "class_kl_from_uniform",
    "min_class_fraction",
    "max_class_fraction",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--num-samples", type=int, default=10000)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.evaluate import evaluate_sampler
    from training.train import keras_sampler, load_config

    dataset = load_config(args.run_dir).dataset
    result: dict[str, object] = {}
    for raw in (False, True):
        sampler = keras_sampler(args.run_dir, raw_generator=raw)
        report = evaluate_sampler(sampler, dataset, num_samples=args.num_samples)
        result["raw" if raw else "ema"] = {k: report["generated"][k] for k in KEYS}
        result["checkpoint"] = sampler.description
    result["how"] = f"{args.num_samples} samples, seeds 0..{args.num_samples - 1}, Keras"
    card_path = args.model_dir / CARD_FILENAME
    card = ModelCard.load(card_path)
    card.metrics["ema_ablation"] = result
    card.dump(card_path)
    print(result)


if __name__ == "__main__":
    main()
