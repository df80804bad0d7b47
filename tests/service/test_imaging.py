"""PNG encoding: exact pixels back, nearest-neighbour scaling, grid layout, stable bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging import encode_grid_png, encode_png, grid_shape, make_grid, upscale_nearest


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def random_image(channels: int, seed: int = 0, height: int = 5, width: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_png_round_trips_exactly(channels: int, mode: str) -> None:
    image = random_image(channels)
    png = encode_png(image)
    assert Image.open(io.BytesIO(png)).mode == mode
    np.testing.assert_array_equal(decode(png).reshape(image.shape), image)


def test_png_bytes_are_deterministic() -> None:
    image = random_image(3)
    assert encode_png(image) == encode_png(image.copy())


def test_nearest_neighbour_scaling_repeats_pixels() -> None:
    image = random_image(3)
    big = decode(encode_png(image, scale=3))
    assert big.shape == (15, 21, 3)
    np.testing.assert_array_equal(big[::3, ::3], image)
    np.testing.assert_array_equal(big[2::3, 1::3], image)
    np.testing.assert_array_equal(upscale_nearest(image, 1), image)


def test_grid_places_tiles_row_by_row_with_padding() -> None:
    tiles = [random_image(1, seed) for seed in range(5)]
    assert grid_shape(5) == (2, 3)
    assert grid_shape(5, columns=2) == (3, 2)
    assert grid_shape(2, columns=8) == (1, 2)
    grid = make_grid(tiles, columns=2, padding_px=2)
    assert grid.shape == (3 * 5 + 2 * 2, 2 * 7 + 2, 1)
    np.testing.assert_array_equal(grid[7:12, 9:16], tiles[3])  # row 1, column 1
    assert not grid[5:7].any()  # the padding between rows is black
    decoded = decode(encode_grid_png(tiles, columns=2, scale=2))
    assert decoded.shape == (3 * 10 + 2 * 2, 2 * 14 + 2)


def test_bad_images_are_refused() -> None:
    with pytest.raises(ValueError, match="expected uint8"):
        encode_png(np.zeros((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="scale must be >= 1"):
        upscale_nearest(random_image(1), 0)


def pillow_png(image: np.ndarray) -> bytes:
    """Pillow's own Image.save: the bytes `encode_png` promises to reproduce."""
    buffer = io.BytesIO()
    pixels = image[:, :, 0] if image.shape[2] == 1 else image
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


def _contents(rng: np.random.Generator, shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Noise, flat, gradient, two-level and repeated-row images: each favours other filters."""
    height, width, channels = shape
    gradient = np.linspace(0, 255, height * width * channels).reshape(shape).astype(np.uint8)
    repeated = np.repeat(rng.integers(0, 256, (1, width, channels), dtype=np.uint8), height, 0)
    return [
        rng.integers(0, 256, shape, dtype=np.uint8),
        np.full(shape, int(rng.integers(0, 256)), dtype=np.uint8),
        gradient,
        (rng.random(shape) > 0.5).astype(np.uint8) * 255,
        repeated,
    ]


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_bytes_equal_pillows_save_for_every_shape_and_content(channels: int) -> None:
    rng = np.random.default_rng(channels)
    for _ in range(40):
        height, width = (int(n) for n in rng.integers(1, 48, size=2))
        for image in _contents(rng, (height, width, channels)):
            for scale in (1, 3):
                assert encode_png(image, scale) == pillow_png(upscale_nearest(image, scale))


@pytest.mark.parametrize("shape", [(448, 448, 1), (300, 300, 3), (200, 700, 4)])
def test_png_bytes_equal_pillows_save_when_split_over_several_idat_chunks(
    shape: tuple[int, int, int],
) -> None:
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    png = encode_png(image)
    assert png.count(b"IDAT") > 1
    assert png == pillow_png(image)
