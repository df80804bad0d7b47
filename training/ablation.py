"""Measure what a GAN's EMA generator, and recomputing its BatchNorm statistics, buy.

    python -m training.ablation runs/fashion-mnist-gan models/fashion-gan

Three networks from the same checkpoint (the best by validation FD, as export takes it,
unless `--checkpoint last`), scored by the same evaluator on the same seeds: the EMA
generator as served (BatchNorm statistics recomputed for its weights), the EMA generator
with the statistics copied from the live generator during training, and the raw (live)
generator. The result goes into the card as `metrics.ema_ablation` (docs/quality.md
shows it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.runtime.card import CARD_FILENAME, ModelCard

KEYS = (
    "frechet_distance",
    "kid",
    "kid_ci95",
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
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.evaluate import evaluate_sampler
    from training.train import SamplerNetwork, keras_sampler, load_config

    config = load_config(args.run_dir)
    dataset, data_dir = config.dataset, Path(config.data_dir) if config.data_dir else None
    result: dict[str, object] = {}
    networks: dict[str, SamplerNetwork] = {
        "ema": "served",
        "ema_copied_bn": "served_copied_bn",
        "raw": "raw",
    }
    for key, network in networks.items():
        sampler = keras_sampler(args.run_dir, network=network, checkpoint=args.checkpoint)
        report = evaluate_sampler(sampler, dataset, num_samples=args.num_samples, data_dir=data_dir)
        result[key] = {k: report["generated"][k] for k in KEYS}
        result[f"{key}_sampler"] = sampler.description
    result["how"] = f"{args.num_samples} samples, seeds 0..{args.num_samples - 1}, Keras"
    card_path = args.model_dir / CARD_FILENAME
    card = ModelCard.load(card_path)
    card.metrics["ema_ablation"] = result
    card.dump(card_path)
    print(result)


if __name__ == "__main__":
    main()
