"""slerp and lerp through latent space, and the animated GIF of a path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging import encode_gif, ping_pong
from service.interpolation import LatentOverflow, interpolate, lerp, positions, slerp


def angle(a: np.ndarray, b: np.ndarray) -> float:
    cosine = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.arccos(np.clip(cosine, -1.0, 1.0)))


def test_positions_include_both_ends() -> None:
    np.testing.assert_allclose(positions(5), [0.0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        positions(1)


def test_ends_are_exact_copies() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(64, dtype=np.float32), rng.standard_normal(64, dtype=np.float32)
    for method in ("slerp", "lerp"):
        path = interpolate(a, b, 7, method)  # type: ignore[arg-type]
        assert path.shape == (7, 64) and path.dtype == np.float32
        np.testing.assert_array_equal(path[0], a)
        np.testing.assert_array_equal(path[-1], b)


def test_slerp_walks_the_great_circle_at_constant_speed() -> None:
    a = np.array([3.0, 0.0, 0.0])
    b = np.array([0.0, 3.0, 0.0])
    path = slerp(a, b, positions(5))
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0)  # equal norms stay
    steps = [angle(path[i], path[i + 1]) for i in range(4)]
    np.testing.assert_allclose(steps, np.pi / 8)  # a quarter turn in four equal steps
    np.testing.assert_allclose(path[2], [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0])


def test_slerp_blends_unequal_norms() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 3.0])
    norms = np.linalg.norm(slerp(a, b, positions(9)), axis=1)
    assert norms[0] == pytest.approx(1.0) and norms[-1] == pytest.approx(3.0)
    assert norms.min() >= 1.0 - 1e-9 and norms.max() <= 3.0 + 1e-9


def test_lerp_is_the_straight_line() -> None:
    a, b = np.array([1.0, 2.0]), np.array([3.0, -2.0])
    np.testing.assert_allclose(lerp(a, b, positions(3)), [[1, 2], [2, 0], [3, -2]])


def test_slerp_keeps_gaussian_latents_off_the_origin_unlike_lerp() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(512), rng.standard_normal(512)
    middle = positions(3)[1:2]
    slerp_norm = np.linalg.norm(slerp(a, b, middle))
    lerp_norm = np.linalg.norm(lerp(a, b, middle))
    assert lerp_norm < 0.8 * slerp_norm  # lerp dips to ~1/sqrt(2) of the radius
    assert slerp_norm == pytest.approx(np.sqrt(512), rel=0.1)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0], [2.0, 4.0]),  # same direction
        ([1.0, 2.0], [-1.0, -2.0]),  # opposite: no unique great circle
        ([0.0, 0.0], [1.0, 1.0]),  # zero vector: no direction
    ],
)
def test_slerp_falls_back_to_lerp_where_the_circle_is_undefined(
    a: list[float], b: list[float]
) -> None:
    t = positions(4)
    result = slerp(np.array(a), np.array(b), t)
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, lerp(np.array(a), np.array(b), t))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="equal-length"):
        interpolate(np.zeros(3), np.zeros(4), 3)
    with pytest.raises(ValueError, match="method"):
        interpolate(np.zeros(3), np.ones(3), 3, "cubic")  # type: ignore[arg-type]
    big = float(np.finfo(np.float32).max)
    with pytest.raises(LatentOverflow, match="float32"):
        interpolate(np.full(2, big), np.array([big, -big]), 3)


def test_ping_pong_goes_forward_then_back_without_repeating_the_ends() -> None:
    assert ping_pong([0, 1, 2, 3]) == [0, 1, 2, 3, 2, 1]
    assert ping_pong([0, 1]) == [0, 1]
    assert ping_pong([0]) == [0]


def test_gif_frames_timing_and_loop() -> None:
    frames = [np.full((2, 3, 1), value, np.uint8) for value in (0, 100, 200)]
    gif = encode_gif(frames, scale=2, frame_duration_ms=50)
    image = Image.open(io.BytesIO(gif))
    assert (image.format, image.size, image.info["loop"]) == ("GIF", (6, 4), 0)
    values = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        assert image.info["duration"] == 50
        values.append(int(np.asarray(image.convert("L"))[0, 0]))
    assert values == [0, 100, 200, 100]
    assert encode_gif(frames, scale=2, frame_duration_ms=50) == gif  # deterministic


def test_gif_of_colour_frames_without_bounce() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    image = Image.open(io.BytesIO(encode_gif(frames, bounce=False)))
    assert getattr(image, "n_frames", 1) == 3
    for index, frame in enumerate(frames):
        image.seek(index)
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), frame)
    with pytest.raises(ValueError, match="at least one"):
        encode_gif([])
