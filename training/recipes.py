"""GAN recipes: the shipped one and the candidates measured against it.

Each recipe is the shipped DCGAN recipe with one change (issue 11: "smaller changes one at a
time"), so a comparison says what that change buys on this machine. `imagegen train gan
--recipe NAME` trains with one; `python -m training.compare` runs several for the same
time budget and reports their validation curves (docs/quality.md, "Recipe comparison").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_RECIPE = "dcgan"


@dataclass(frozen=True)
class Recipe:
    """A named training recipe: keyword arguments of `GAN` and the batch size."""

    name: str
    summary: str
    model_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    conditional_only: bool = False  # for `imagegen train cgan` only


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "dcgan",
            "shipped: D 2 convs (64, 128) + dropout 0.3, label smoothing 0.9, "
            "Adam 2e-4 (0.5) for both, batch 128, EMA 0.999",
        ),
        Recipe(
            "wide-d",
            "D twice as wide (128, 256 channels; 4x the parameters)",
            {"discriminator_width": 128},
        ),
        Recipe(
            "deep-d",
            "D with a third stride-2 convolution (64, 128, 256)",
            {"discriminator_depth": 3},
        ),
        Recipe(
            "ttur",
            "two time-scales: D learns at 4e-4, G at 2e-4 (Heusel et al. 2017)",
            {"discriminator_learning_rate": 4e-4},
        ),
        Recipe(
            "sn-d",
            "spectral-normalised D (Miyato et al. 2018), so no dropout and no smoothing",
            {"spectral_norm": True, "dropout": 0.0, "real_label": 1.0},
        ),
        Recipe(
            "r1",
            "lazy R1 penalty on real images, gamma 1, every 16 steps (Mescheder et al. 2018)",
            {"r1_gamma": 1.0, "r1_every": 16},
        ),
        Recipe(
            "diffaugment",
            "DiffAugment translation + cutout on D's inputs (Zhao et al. 2020)",
            {"diffaugment": "translation,cutout"},
        ),
        Recipe("batch64", "batch 64 instead of 128 (twice the steps)", batch_size=64),
        Recipe("batch32", "batch 32 instead of 128 (four times the steps)", batch_size=32),
        Recipe(
            "batch32-ac",
            "conditional models: batch 32 plus an auxiliary classifier on D, trained on "
            "real images, whose cross-entropy the generator also minimises (weight 0.1; "
            "at weight 1 the fashion-mnist cgan collapsed: validation recall 0.001 by "
            "epoch 16)",
            {"class_loss_weight": 0.1},
            batch_size=32,
            conditional_only=True,
        ),
    )
}


def get_recipe(name: str, kind: str | None = None) -> Recipe:
    """The recipe called `name`; a ValueError naming the known ones otherwise, or when a
    conditional-only recipe is asked for another `kind` of model."""
    try:
        recipe = RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
    if kind is not None and recipe.conditional_only and kind != "cgan":
        raise ValueError(f"recipe {name!r} is for the conditional GAN (cgan) only")
    return recipe
