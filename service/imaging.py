"""uint8 image arrays to PNG bytes (single images, grids) and animated GIFs; upscaling.

Encoding is deterministic (fixed compression level, no timestamps or text chunks), so equal
arrays always give equal bytes.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 6  # fixed, so bytes never depend on Pillow's defaults
GRID_PADDING_PX = 2

FrameT = TypeVar("FrameT")


def upscale_nearest(image: np.ndarray, scale: int) -> np.ndarray:
    """Repeat every pixel `scale` times along height and width (`[H, W, C]` uint8)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return image
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected uint8 [H, W, 1|3|4], got {image.dtype} {list(image.shape)}")
    # Pillow infers L, RGB or RGBA from a uint8 array's shape.
    pixels = image[:, :, 0] if image.shape[2] == 1 else image
    return Image.fromarray(np.ascontiguousarray(pixels))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {1: ("L", 0), 3: ("RGB", 2), 4: ("RGBA", 6)}  # channels -> (Pillow mode, color type)
_PNG_MAX_CHUNK = 65536  # Pillow's MAXBLOCK: Image.save writes IDAT chunks of at most this


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", crc)))


_PNG_IEND = _png_chunk(b"IEND", b"")


def encode_png(image: np.ndarray, scale: int = 1) -> bytes:
    """One `[H, W, C]` uint8 image -> PNG bytes, upscaled `scale` times.

    The bytes are exactly those of `Image.save(format="PNG", compress_level=6)` (a test
    compares them over many shapes and contents), at half its cost: Pillow's own zip
    encoder (adaptive row filters, zlib) without save()'s plugin dispatch and file object.
    On the single-image route this was a fifth of the event loop's time per request.
    """
    image = upscale_nearest(image, scale)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in _PNG_MODES:
        raise ValueError(f"expected uint8 [H, W, 1|3|4], got {image.dtype} {list(image.shape)}")
    height, width, channels = image.shape
    mode, color_type = _PNG_MODES[channels]
    pixels = Image.frombuffer(mode, (width, height), np.ascontiguousarray(image), "raw", mode, 0, 1)
    encoder = Image._getencoder(mode, "zip", mode, (False, PNG_COMPRESS_LEVEL, -1, b""))
    encoder.setimage(pixels.im, (0, 0, width, height))
    # The chunk size Image.save uses, so the IDAT chunks (and bytes) are the same.
    chunk_bytes = max(_PNG_MAX_CHUNK, width * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header)]
    while True:
        _, status, data = encoder.encode(chunk_bytes)
        parts.append(_png_chunk(b"IDAT", data))
        if status:
            break
    if status < 0:
        raise ValueError(f"PNG encoder failed with status {status}")
    parts.append(_PNG_IEND)
    return b"".join(parts)


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) for `count` tiles; columns default to a near-square layout."""
    if count < 1:
        raise ValueError(f"a grid needs at least one image, got {count}")
    cols = math.ceil(math.sqrt(count)) if columns is None else min(columns, count)
    if cols < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    return math.ceil(count / cols), cols


def make_grid(
    images: Sequence[np.ndarray], columns: int | None = None, padding_px: int = GRID_PADDING_PX
) -> np.ndarray:
    """Tile equal-sized `[H, W, C]` uint8 images row by row, separated by black padding."""
    rows, cols = grid_shape(len(images), columns)
    height, width, channels = images[0].shape
    grid = np.zeros(
        (rows * height + (rows - 1) * padding_px, cols * width + (cols - 1) * padding_px, channels),
        dtype=np.uint8,
    )
    for index, image in enumerate(images):
        row, col = divmod(index, cols)
        top, left = row * (height + padding_px), col * (width + padding_px)
        grid[top : top + height, left : left + width] = image
    return grid


def encode_grid_png(
    images: Sequence[np.ndarray], columns: int | None = None, scale: int = 1
) -> bytes:
    """Images (each upscaled `scale` times) in one grid PNG."""
    return encode_png(make_grid([upscale_nearest(image, scale) for image in images], columns))


def ping_pong(frames: Sequence[FrameT]) -> list[FrameT]:
    """Frames forward then back, without repeating the two ends: a seamless loop."""
    return [*frames, *frames[-2:0:-1]]


def encode_gif(
    images: Sequence[np.ndarray],
    scale: int = 1,
    frame_duration_ms: int = 100,
    bounce: bool = True,
) -> bytes:
    """An endlessly looping animated GIF of the images, played forward and back if `bounce`.

    Grayscale frames keep their exact values; colour frames get an adaptive 256-colour palette
    each. Pillow folds identical consecutive frames into one longer frame.
    """
    if not images:
        raise ValueError("an animation needs at least one image")
    frames = [_to_pil(upscale_nearest(image, scale)) for image in images]
    if bounce:
        frames = ping_pong(frames)
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_duration_ms,
        loop=0,
        optimize=False,
    )
    return buffer.getvalue()
