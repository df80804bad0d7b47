"""Paths through latent space: spherical (slerp) and linear (lerp) interpolation, pure numpy.

Gaussian latents live near a sphere of radius sqrt(latent_dim); a straight line between two
of them dips towards the origin, where generators were never trained, so slerp is the default.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["slerp", "lerp"]
METHODS: tuple[Method, ...] = ("slerp", "lerp")

# Below this angle (radians) slerp's 1/sin(angle) loses precision and lerp is the same path;
# near pi the great circle is undefined (antipodal points), so lerp is used there as well.
_MIN_ANGLE_RAD = 1e-4


class LatentOverflow(ValueError):
    """A point of the path does not fit in float32 (endpoints near float32's limits)."""


def positions(steps: int) -> np.ndarray:
    """`steps` evenly spaced positions from 0 (start) to 1 (end), both included."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    return np.linspace(0.0, 1.0, steps)


def lerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points `(1 - t) * start + t * end`, one row per position (float64)."""
    a, b = np.asarray(start, np.float64), np.asarray(end, np.float64)
    weights = np.asarray(t, np.float64)[:, None]
    result: np.ndarray = (1.0 - weights) * a + weights * b
    return result


def slerp(start: np.ndarray, end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points on the great circle from `start` to `end`, with norms blended along the way.

    The angle comes from the unit vectors; the weights apply to the vectors themselves (the
    usual latent-space slerp), so equal-norm endpoints keep that norm all along the path.
    Falls back to lerp when the angle is ~0 or ~pi, or an endpoint is the zero vector.
    """
    a, b = np.asarray(start, np.float64), np.asarray(end, np.float64)
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0.0 or norm_b == 0.0:
        return lerp(a, b, t)
    cosine = float(np.clip(np.dot(a / norm_a, b / norm_b), -1.0, 1.0))
    angle = np.arccos(cosine)
    if angle < _MIN_ANGLE_RAD or np.pi - angle < _MIN_ANGLE_RAD:
        return lerp(a, b, t)
    weights = np.asarray(t, np.float64)[:, None]
    sine = np.sin(angle)
    result: np.ndarray = (np.sin((1.0 - weights) * angle) / sine) * a + (
        np.sin(weights * angle) / sine
    ) * b
    return result


def interpolate(
    start: np.ndarray, end: np.ndarray, steps: int, method: Method = "slerp"
) -> np.ndarray:
    """`[steps, latent_dim]` float32 latents from `start` to `end`; the ends are exact copies.

    Copying the endpoints keeps the first and last frames bit-identical to the images of the
    start and end latents (no float round-off), whatever the method.
    """
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"start and end must be equal-length vectors, got {a.shape}, {b.shape}")
    if method == "slerp":
        path = slerp(a, b, positions(steps))
    elif method == "lerp":
        path = lerp(a, b, positions(steps))
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    with np.errstate(over="ignore"):
        latents = path.astype(np.float32)
    if not np.isfinite(latents).all():
        raise LatentOverflow("the interpolated latents leave the float32 range")
    latents[0], latents[-1] = a, b
    return latents
