"""Fixtures for the training tests: quiet TensorFlow, tiny IDX data sets."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array as a gzip-compressed IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_idx_dir(tmp_path: Path) -> Path:
    """A folder of IDX files shaped like Fashion-MNIST: 256 train, 64 test images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for stem, n in (("train", 256), ("t10k", 64)):
        labels = np.arange(n) % 10
        # Class-dependent blobs so the data is not pure noise.
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 8, 4:24] = 220
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return folder
