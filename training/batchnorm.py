"""BatchNorm statistics for a network whose weights were averaged (the GAN's EMA generator).

An exponential moving average of the weights comes without matching BatchNorm statistics:
the live generator's running means and variances describe the live weights' activations,
not the averaged ones'. `recompute_batchnorm_statistics` measures them on the averaged
network itself, layer by layer, so that inference mode normalises exactly as a (very
large) training batch of the same latents would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

DEFAULT_NUM_LATENTS = 4096
DEFAULT_SEED = 2024
_CHUNK = 512


def batchnorm_layers(network: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]


def recompute_batchnorm_statistics(
    network: keras.Model, latents: np.ndarray | list[np.ndarray]
) -> int:
    """Set every BatchNorm layer's moving mean and variance to the exact (biased) statistics
    of its input over `latents`, in topological order; returns the number of layers set.
    A network with several inputs (a conditional generator) takes a list of arrays.

    Each layer's input is measured with the layers before it already using their new
    statistics in inference mode, which is what a training-mode pass over all `latents`
    as one batch computes too.
    """
    layers = batchnorm_layers(network)
    for layer in layers:
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            raise ValueError(f"{layer.name}: only channels-last BatchNormalization is supported")
        probe = keras.Model(network.input, layer.input)
        total = total_sq = None
        count = 0
        rows = len(latents[0]) if isinstance(latents, list) else len(latents)
        for start in range(0, rows, _CHUNK):
            chunk = (
                [part[start : start + _CHUNK] for part in latents]
                if isinstance(latents, list)
                else latents[start : start + _CHUNK]
            )
            x = np.asarray(probe(chunk, training=False), np.float64)
            x = x.reshape(-1, x.shape[-1])
            total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
            total_sq = (x * x).sum(axis=0) if total_sq is None else total_sq + (x * x).sum(axis=0)
            count += len(x)
        assert total is not None and total_sq is not None
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(
            np.maximum(total_sq / count - mean * mean, 0.0).astype(np.float32)
        )
    return len(layers)


def default_latents(latent_dim: int, num_latents: int = DEFAULT_NUM_LATENTS) -> np.ndarray:
    """The standard normal latents (the seed contract's prior) the statistics are measured on."""
    return np.random.default_rng(DEFAULT_SEED).standard_normal(
        (num_latents, latent_dim), dtype=np.float32
    )


@contextmanager
def batchnorm_statistics_kept(network: keras.Model) -> Iterator[None]:
    """Put every BatchNorm layer's moving statistics back as they were on exit."""
    saved: list[tuple[Any, np.ndarray]] = [
        (variable, np.array(variable))
        for layer in batchnorm_layers(network)
        for variable in (layer.moving_mean, layer.moving_variance)
    ]
    try:
        yield
    finally:
        for variable, value in saved:
            variable.assign(value)
