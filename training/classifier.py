"""The evaluator's feature extractor: a small CNN per data set, trained here, shipped as ONNX.

`train_classifier` (TensorFlow, imported lazily) trains the network and exports it with
tf2onnx to `training/assets/<dataset>-classifier.onnx`, with a json beside it recording
accuracy, data, seed and version. `FeatureExtractor` runs that file in onnxruntime, so
scoring a model needs no TensorFlow at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data import load_dataset

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# Bump when the architecture, training recipe or input convention changes: cached real
# features are keyed by it, and `ensure_classifier` retrains a file of an older version.
CLASSIFIER_VERSION = "cnn-v1"
INPUT_NAME = "images"  # float32 (N, 28, 28, 1), pixels scaled to [0, 1]
FEATURES_NAME = "features"  # penultimate layer activations (after ReLU), float32 (N, 128)
LOGITS_NAME = "logits"  # float32 (N, num_classes)
FEATURE_DIM = 128
ONNX_OPSET = 17


@dataclass(frozen=True)
class TrainingRecipe:
    """Hyper-parameters of one classifier; the defaults take minutes on two CPU cores."""

    epochs: int
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    max_shift_px: int = 2  # random translation, both axes
    horizontal_flip: bool = False  # fine for clothes, wrong for digits


RECIPES: dict[str, TrainingRecipe] = {
    "fashion-mnist": TrainingRecipe(epochs=10, horizontal_flip=True),
    # 4,000 training digits: more passes, still seconds per epoch.
    "mnist": TrainingRecipe(epochs=40, batch_size=64),
}


def classifier_paths(dataset_name: str, assets_dir: Path | None = None) -> tuple[Path, Path]:
    """(model.onnx, info.json) of a data set's classifier."""
    folder = ASSETS_DIR if assets_dir is None else Path(assets_dir)
    return folder / f"{dataset_name}-classifier.onnx", folder / f"{dataset_name}-classifier.json"


def load_classifier_info(dataset_name: str, assets_dir: Path | None = None) -> dict[str, Any]:
    """The json written beside a classifier (accuracy, data, seed, version, sha256)."""
    _, info_path = classifier_paths(dataset_name, assets_dir)
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    return info


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 0..255 (N, 28, 28, 1) -> float32 in [0, 1], the classifier's input."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"classifier input must be uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise ValueError(f"classifier input must be (N, 28, 28, 1), got {images.shape}")
    return images.astype(np.float32) / 255.0


class FeatureExtractor:
    """A trained classifier in onnxruntime: uint8 images -> (penultimate features, logits)."""

    def __init__(self, onnx_path: Path, *, batch_size: int = 1000, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default
        options.log_severity_level = 3
        self.onnx_path = Path(onnx_path)
        self.batch_size = batch_size
        self._session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(
        self, images: np.ndarray, *, progress: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        from tqdm import tqdm

        features, logits = [], []
        starts = range(0, len(images), self.batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None, leave=False):
            batch = to_unit_float(images[start : start + self.batch_size])
            f, lg = self._session.run([FEATURES_NAME, LOGITS_NAME], {INPUT_NAME: batch})
            features.append(f)
            logits.append(lg)
        if not features:
            return np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, 10), np.float32)
        return np.concatenate(features), np.concatenate(logits)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class index (argmax of the logits) of each image."""
        return np.argmax(self(images)[1], axis=1)


def build_classifier(num_classes: int = 10) -> Any:
    """The CNN as a functional Keras model with two outputs: features and logits.

    Three conv stages (32, 64, 128 channels) with batch norm, then a 128-unit dense
    layer whose ReLU output is the feature vector; about 0.25M parameters (1 MB).
    """
    import keras
    from keras import layers

    def conv_block(x: Any, channels: int, name: str) -> Any:
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input((28, 28, 1), name=INPUT_NAME)
    x = conv_block(inputs, 32, "s1")
    x = layers.MaxPooling2D(name="s1_pool")(x)  # 14x14
    x = conv_block(x, 64, "s2")
    x = layers.MaxPooling2D(name="s2_pool")(x)  # 7x7
    x = conv_block(x, 128, "s3")
    x = layers.MaxPooling2D(name="s3_pool")(x)  # 3x3
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="drop_flat")(x)
    features = layers.Dense(FEATURE_DIM, activation="relu", name=FEATURES_NAME)(x)
    x = layers.Dropout(0.3, name="drop_features")(features)
    logits = layers.Dense(num_classes, name=LOGITS_NAME)(x)
    return keras.Model(inputs, {FEATURES_NAME: features, LOGITS_NAME: logits}, name="classifier")


def _augmented_dataset(
    images: np.ndarray, labels: np.ndarray, recipe: TrainingRecipe, seed: int
) -> Any:
    import tensorflow as tf

    pad = recipe.max_shift_px

    def augment(x: Any, y: Any) -> tuple[Any, Any]:
        if pad:
            x = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]])
            x = tf.image.random_crop(x, (28, 28, 1))
        if recipe.horizontal_flip:
            x = tf.image.random_flip_left_right(x)
        return x, y

    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32) / 255.0, labels))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE)


def export_classifier_onnx(model: Any, path: Path) -> None:
    """Convert the Keras classifier to ONNX (named input, dynamic batch, opset 17)."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, 28, 28, 1), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def serve(images: Any) -> dict[str, Any]:
        out = model(images, training=False)
        return {
            FEATURES_NAME: tf.identity(out[FEATURES_NAME], name=FEATURES_NAME),
            LOGITS_NAME: tf.identity(out[LOGITS_NAME], name=LOGITS_NAME),
        }

    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET)
    # tf2onnx names graph outputs after the dict keys; make sure, since evaluation relies on it.
    output_names = [o.name for o in model_proto.graph.output]
    if sorted(output_names) != sorted([FEATURES_NAME, LOGITS_NAME]):
        raise RuntimeError(f"unexpected ONNX outputs {output_names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_proto.SerializeToString())


def train_classifier(
    dataset_name: str,
    *,
    seed: int = 0,
    epochs: int | None = None,
    data_dir: Path | None = None,
    assets_dir: Path | None = None,
    max_train_images: int | None = None,
    verbose: int = 2,
) -> dict[str, Any]:
    """Train, export to ONNX and describe a data set's classifier; returns the info json.

    The test accuracy is measured on the exported ONNX file (what evaluation runs), and
    checked against Keras' own predictions.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    data = load_dataset(dataset_name, data_dir)
    recipe = RECIPES[dataset_name]
    if epochs is not None:
        recipe = TrainingRecipe(**{**recipe.__dict__, "epochs": epochs})
    train_x, train_y = data.train_images, data.train_labels
    if max_train_images is not None:
        train_x, train_y = train_x[:max_train_images], train_y[:max_train_images]

    model = build_classifier(len(data.class_names))
    steps = recipe.epochs * -(-len(train_x) // recipe.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, max(steps, 1))
    # Train through a logits-only view of the same layers; export the two-output model.
    logits_model = keras.Model(model.input, model.output[LOGITS_NAME])
    logits_model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_ds = _augmented_dataset(train_x, train_y, recipe, seed)
    started = time.monotonic()
    logits_model.fit(train_ds, epochs=recipe.epochs, shuffle=False, verbose=verbose)
    train_seconds = time.monotonic() - started

    onnx_path, info_path = classifier_paths(dataset_name, assets_dir)
    export_classifier_onnx(model, onnx_path)
    extractor = FeatureExtractor(onnx_path)
    onnx_logits = extractor(data.test_images)[1]
    keras_logits = model.predict(
        tf.constant(data.test_images.astype(np.float32) / 255.0), batch_size=1000, verbose=0
    )[LOGITS_NAME]
    parity = float(np.max(np.abs(onnx_logits - keras_logits)))
    if parity > 1e-3:
        raise RuntimeError(f"ONNX classifier differs from Keras by {parity:.2e}")
    accuracy = float(np.mean(np.argmax(onnx_logits, axis=1) == data.test_labels))

    info: dict[str, Any] = {
        "version": f"{dataset_name}-{CLASSIFIER_VERSION}-seed{seed}",
        "architecture": CLASSIFIER_VERSION,
        "dataset": data.card(),
        "train_images_used": len(train_x),
        "test_accuracy": round(accuracy, 5),
        "seed": seed,
        "recipe": recipe.__dict__,
        "train_seconds": round(train_seconds, 1),
        "onnx": {
            "file": onnx_path.name,
            "opset": ONNX_OPSET,
            "sha256": _sha256(onnx_path),
            "input": INPUT_NAME,
            "outputs": [FEATURES_NAME, LOGITS_NAME],
            "input_scaling": "uint8 / 255 -> [0, 1]",
            "max_abs_diff_vs_keras": parity,
        },
        "producers": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    try:
        import tf2onnx

        info["producers"]["tf2onnx"] = tf2onnx.__version__
    except ImportError:  # pragma: no cover - tf2onnx was needed above
        pass
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def ensure_classifier(
    dataset_name: str, *, assets_dir: Path | None = None, data_dir: Path | None = None
) -> Path:
    """Path of the data set's classifier ONNX file, training one first when missing or stale."""
    onnx_path, info_path = classifier_paths(dataset_name, assets_dir)
    if onnx_path.is_file() and info_path.is_file():
        info = load_classifier_info(dataset_name, assets_dir)
        if info.get("architecture") == CLASSIFIER_VERSION and info["onnx"]["sha256"] == _sha256(
            onnx_path
        ):
            return onnx_path
    train_classifier(dataset_name, data_dir=data_dir, assets_dir=assets_dir)
    return onnx_path
