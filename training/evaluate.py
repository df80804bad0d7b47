"""Score a generator against real data with the project's own classifier, calibrated on real points.

A report holds, for generated images: Frechet distance of the classifier's penultimate
features to the test set's, KID with a 95% confidence interval, k-NN precision/recall (k=3)
and density/coverage (k=5), the class histogram of the classifier's predictions and its KL
divergence from uniform, and a nearest-training-image check for memorisation. Beside them,
from the same evaluator and the same run, four real-data points, all built from one random
train subset (disjoint from the test set and from the validation split): the subset itself
(the floor), the subset blurred with sigma 0.5 and 1, and the subset with three classes
removed. Real features and the reference metrics are cached on disk, keyed by classifier,
data and size.

Latents: generated sample i uses seed `seed + i`, i.e. `latent_for_seed(seed + i, latent_dim)`
from the model card contract, so a report's images are the ones the service returns for
those seeds. Nothing here imports TensorFlow, except training a missing classifier and
loading a Keras run folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from service.runtime.card import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ModelCard,
    class_for_seed,
    class_weights,
    latent_for_seed,
    to_uint8,
)
from training.classifier import FeatureExtractor, ensure_classifier, load_classifier_info
from training.data import ImageDataset, load_dataset, validation_mask
from training.metrics import (
    class_histogram,
    frechet_distance,
    kernel_inception_distance,
    kl_from_uniform,
    kth_neighbour_radii,
    nearest_neighbour_distances,
    prdc,
)

__all__ = [
    "Sampler",
    "ValidationScorer",
    "ensure_classifier",
    "evaluate_command",
    "evaluate_images",
    "evaluate_reference",
    "evaluate_sampler",
    "format_report",
    "onnx_sampler",
    "sample_images",
]

CACHE_DIR_ENV = "IMAGEGEN_CACHE_DIR"
PR_K = 3  # k of precision and recall
DC_K = 5  # k of density and coverage
BLUR_SIGMAS = (0.5, 1.0)
REMOVED_CLASSES = (0, 1, 2)
REAL_SUBSET_SEED = 0  # the fixed random train subset of the real-data floor
PRDC_SUBSET_SEED = 1
MEMORISATION_PERCENTILE = 1.0  # of test-to-train nearest distances
MEMORISATION_FLAG_FACTOR = 3.0  # flag when 3x more generated than test images fall below it
REFERENCE_KEYS = ("real_train_vs_test", "blur_sigma_0.5", "blur_sigma_1", "three_classes_removed")
_GENERATE_CHUNK = 500
_CACHE_FORMAT = 4  # 3: reference rows from a train subset outside the validation split;
# 4: the test images' predicted classes (the class-fidelity reference)


@dataclass
class Sampler:
    """A generator as the evaluator sees it: float32 latents (N, latent_dim) -> uint8 images.

    A conditional one (`num_classes` > 0) takes float32 class weights (N, num_classes) too.
    """

    latent_dim: int
    generate: Callable[..., np.ndarray]  # (latents[, class weights]) -> uint8 (N, 28, 28, 1)
    description: str
    num_classes: int = 0


def onnx_sampler(model_dir: Path, *, batch_size: int = _GENERATE_CHUNK) -> Sampler:
    """The served artifact `models/<name>/` (model.onnx + model.json) run in onnxruntime."""
    import onnxruntime as ort

    model_dir = Path(model_dir)
    card = ModelCard.load(model_dir / CARD_FILENAME)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(model_dir / ONNX_FILENAME), options, providers=["CPUExecutionProvider"]
    )
    output_range = card.image.output_range

    conditioning = card.conditioning

    def generate(latents: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        latents = np.asarray(latents, dtype=np.float32)
        outputs = []
        for i in range(0, len(latents), batch_size):
            feed = {card.input_name: latents[i : i + batch_size]}
            if conditioning is not None:
                if weights is None:
                    raise ValueError(f"{card.name} is conditional: pass class weights")
                feed[conditioning.input_name] = np.asarray(
                    weights[i : i + batch_size], dtype=np.float32
                )
            outputs.append(session.run([card.output_name], feed)[0])
        return to_uint8(np.concatenate(outputs), output_range)

    return Sampler(
        latent_dim=card.latent_dim,
        num_classes=card.num_classes,
        generate=generate,
        description=f"{card.name} {card.version} ({card.kind}, ONNX: {model_dir / ONNX_FILENAME})",
    )


def sample_images(
    sampler: Sampler, num_samples: int, seed: int = 0, *, progress: bool = True
) -> np.ndarray:
    """Images for seeds seed .. seed+num_samples-1 (the service's seed contract)."""
    from tqdm import tqdm

    chunks = []
    for start in tqdm(
        range(0, num_samples, _GENERATE_CHUNK), desc="generating", disable=not progress, leave=False
    ):
        seeds = range(seed + start, seed + min(start + _GENERATE_CHUNK, num_samples))
        latents = np.stack([latent_for_seed(s, sampler.latent_dim) for s in seeds])
        if sampler.num_classes:
            classes = np.array([class_for_seed(s, sampler.num_classes) for s in seeds])
            images = np.asarray(
                sampler.generate(latents, class_weights(classes, sampler.num_classes))
            )
        else:
            images = np.asarray(sampler.generate(latents))
        if images.dtype != np.uint8 or images.shape != (len(latents), 28, 28, 1):
            raise ValueError(
                f"sampler {sampler.description!r} returned {images.dtype} {images.shape}; "
                f"expected uint8 {(len(latents), 28, 28, 1)}"
            )
        chunks.append(images)
    return np.concatenate(chunks)


# --- the real side: features, reference points, cache ------------------------------------


@dataclass
class RealReference:
    """Everything about the real data that scoring a generator reuses."""

    dataset: ImageDataset
    classifier: dict[str, Any]  # version, test_accuracy, sha256
    extractor: FeatureExtractor
    test_features: np.ndarray
    test_radii: dict[int, np.ndarray]  # k -> k-th neighbour distance among test features
    test_to_train_pixel_nn: np.ndarray  # each test image's nearest train image, pixel L2
    test_predictions: np.ndarray  # the classifier's class for each test image
    num_real_subset: int
    reference: dict[str, dict[str, Any]]  # the four reference points' metrics


def _cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imagegen" / "evaluate"


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).view(np.uint8).data)
    return digest.hexdigest()[:16]


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of uint8 (N, H, W, C) images over the spatial axes only, back to uint8."""
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0))
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def _pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _feature_metrics(
    features: np.ndarray, logits: np.ndarray, real: RealReference, *, seed: int = PRDC_SUBSET_SEED
) -> dict[str, Any]:
    """FD on all samples; PRDC against all test features, with at most as many fake samples."""
    num_classes = len(real.dataset.class_names)
    fractions = class_histogram(np.argmax(logits, axis=1), num_classes)
    prdc_features = features
    if len(features) > len(real.test_features):
        # k-NN recall and coverage depend on the fake set's size; compare like with like.
        pick = np.random.default_rng(seed).choice(len(features), len(real.test_features), False)
        prdc_features = features[np.sort(pick)]
    scores = prdc(
        real.test_features, prdc_features, pr_k=PR_K, dc_k=DC_K, real_radii=real.test_radii
    )
    kid = kernel_inception_distance(real.test_features, features, seed=seed)
    return {
        "num_samples": len(features),
        "frechet_distance": round(frechet_distance(features, real.test_features), 4),
        "kid": round(kid["kid"], 6),
        "kid_ci95": [round(v, 6) for v in kid["kid_ci95"]],
        "kid_num_samples": [kid["kid_num_real"], kid["kid_num_fake"]],
        **{name: round(value, 4) for name, value in scores.items()},
        "prdc_num_samples": len(prdc_features),
        "class_histogram": {
            name: round(float(f), 4)
            for name, f in zip(real.dataset.class_names, fractions, strict=True)
        },
        "class_kl_from_uniform": round(kl_from_uniform(fractions), 5),
        "min_class_fraction": round(float(fractions.min()), 4),
        "max_class_fraction": round(float(fractions.max()), 4),
    }


def reference_subset(data: ImageDataset, num_real_subset: int) -> np.ndarray:
    """Indices of the fixed random train subset behind every reference row.

    Drawn outside the validation split (which training watches), so no reported figure
    rests on images used to pick a checkpoint.
    """
    outside_validation = np.flatnonzero(~validation_mask(len(data.train_images)))
    pick = np.random.default_rng(REAL_SUBSET_SEED).choice(
        len(outside_validation), min(num_real_subset, len(outside_validation)), replace=False
    )
    return outside_validation[np.sort(pick)]


def _reference_points(real: RealReference, num_real_subset: int) -> dict[str, dict[str, Any]]:
    # Every row is built from the same train subset, disjoint from the test set it is
    # compared with: the blurred and class-dropped rows then differ from the floor only
    # by their flaw (built from test images they would share its samples and score
    # inflated precision and density).
    data, extract = real.dataset, real.extractor
    subset = reference_subset(data, num_real_subset)
    images, labels = data.train_images[subset], data.train_labels[subset]
    sets = {
        "real_train_vs_test": images,
        "blur_sigma_0.5": blur(images, BLUR_SIGMAS[0]),
        "blur_sigma_1": blur(images, BLUR_SIGMAS[1]),
        "three_classes_removed": images[~np.isin(labels, REMOVED_CLASSES)],
    }
    return {
        key: _feature_metrics(*extract(images, progress=f"features: {key}"), real)
        for key, images in sets.items()
    }


def classifier_summary(dataset_name: str, assets_dir: Path | None = None) -> dict[str, Any]:
    """What a report says about the classifier it used."""
    info = load_classifier_info(dataset_name, assets_dir)
    return {
        "version": info["version"],
        "test_accuracy": info["test_accuracy"],
        "sha256": info["onnx"]["sha256"],
        "feature_layer": "penultimate dense layer, 128 ReLU units",
    }


@lru_cache(maxsize=4)
def _load_data(dataset_name: str, data_dir: str | None) -> ImageDataset:
    return load_dataset(dataset_name, Path(data_dir) if data_dir else None)


def _test_side(data: ImageDataset, extractor: FeatureExtractor) -> dict[str, np.ndarray]:
    """What does not depend on the sample count: test features, their k-NN radii, each
    test image's distance to its nearest train image, and the classifier's class for it."""
    test_features, test_logits = extractor(data.test_images, progress="features: test")
    radii = kth_neighbour_radii(test_features, (PR_K, DC_K))
    nearest, _ = nearest_neighbour_distances(
        _pixels(data.test_images), _pixels(data.train_images), progress="nearest train image: test"
    )
    return {
        "test_features": test_features,
        "test_radii_pr": radii[PR_K],
        "test_radii_dc": radii[DC_K],
        "test_to_train_pixel_nn": nearest,
        "test_predictions": np.argmax(test_logits, axis=1),
    }


def _assemble(
    data: ImageDataset,
    extractor: FeatureExtractor,
    classifier: dict[str, Any],
    num_real_subset: int,
    test_side: dict[str, np.ndarray],
    reference: dict[str, dict[str, Any]] | None,
) -> RealReference:
    real = RealReference(
        dataset=data,
        classifier=classifier,
        extractor=extractor,
        test_features=test_side["test_features"],
        test_radii={PR_K: test_side["test_radii_pr"], DC_K: test_side["test_radii_dc"]},
        test_to_train_pixel_nn=test_side["test_to_train_pixel_nn"],
        test_predictions=test_side["test_predictions"],
        num_real_subset=num_real_subset,
        reference=reference or {},
    )
    if reference is None:
        real.reference = _reference_points(real, num_real_subset)
    return real


def build_real_reference(
    data: ImageDataset,
    extractor: FeatureExtractor,
    classifier: dict[str, Any],
    num_real_subset: int,
) -> RealReference:
    """Compute the real side from scratch (no cache): test features, k-NN radii, the
    test images' nearest-train distances and the four reference points."""
    return _assemble(
        data, extractor, classifier, num_real_subset, _test_side(data, extractor), None
    )


_REAL_CACHE: dict[tuple[str, str | None, int], RealReference] = {}


def real_reference(
    dataset_name: str, *, num_samples: int = 10000, data_dir: Path | None = None
) -> RealReference:
    """The real side of every report, from memory, from the disk cache, or computed (once).

    Two cache files: `<stem>.npz` (test features, radii, nearest-train distances) and
    `<stem>-n<N>.json` (the reference points, whose train subset has N images).
    """
    key = (dataset_name, str(data_dir) if data_dir else None, num_samples)
    if key in _REAL_CACHE:
        return _REAL_CACHE[key]
    data = _load_data(dataset_name, key[1])
    onnx_path = ensure_classifier(dataset_name, data_dir=data_dir)
    classifier = classifier_summary(dataset_name, onnx_path.parent)
    num_real_subset = min(num_samples, int((~validation_mask(len(data.train_images))).sum()))
    stem = (
        f"{dataset_name}-{classifier['sha256'][:12]}-"
        f"{_fingerprint(data.train_images, data.test_images, data.test_labels)}-v{_CACHE_FORMAT}"
    )
    npz_path = _cache_dir() / f"{stem}.npz"
    json_path = _cache_dir() / f"{stem}-n{num_real_subset}.json"
    extractor = FeatureExtractor(onnx_path)
    if npz_path.is_file():
        with np.load(npz_path) as cached:
            test_side = {name: cached[name] for name in cached.files}
    else:
        test_side = _test_side(data, extractor)
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            npz_path,
            test_features=test_side["test_features"],
            test_radii_pr=test_side["test_radii_pr"],
            test_radii_dc=test_side["test_radii_dc"],
            test_to_train_pixel_nn=test_side["test_to_train_pixel_nn"],
            test_predictions=test_side["test_predictions"],
        )
    reference = None
    if json_path.is_file():
        reference = json.loads(json_path.read_text(encoding="utf-8"))
    real = _assemble(data, extractor, classifier, num_real_subset, test_side, reference)
    if reference is None:
        json_path.write_text(json.dumps(real.reference, indent=2), encoding="utf-8")
    _REAL_CACHE[key] = real
    return real


def reference_problems(reference: dict[str, dict[str, Any]]) -> list[str]:
    """Orderings the calibration points must satisfy; an empty list means the evaluator is sane."""
    fd = {key: reference[key]["frechet_distance"] for key in REFERENCE_KEYS}
    problems = []
    if not fd["real_train_vs_test"] * 3 < fd["blur_sigma_0.5"]:
        problems.append("real-vs-real floor is not far (3x) below the sigma-0.5 blur")
    if not fd["blur_sigma_0.5"] < fd["blur_sigma_1"]:
        problems.append("sigma-0.5 blur is not below sigma-1 blur")
    if not fd["real_train_vs_test"] * 3 < fd["three_classes_removed"]:
        problems.append("three-classes-removed is not well (3x) above the real floor")
    return problems


def _header(real: RealReference) -> dict[str, Any]:
    data = real.dataset
    return {
        "dataset": data.name,
        "data": {
            "source": data.source,
            "train_size": len(data.train_images),
            "test_size": len(data.test_images),
        },
        "classifier": real.classifier,
    }


def _reference_section(real: RealReference) -> dict[str, Any]:
    problems = reference_problems(real.reference)
    return {
        "reference": real.reference,
        "reference_ok": not problems,
        "reference_problems": problems,
        "protocol": {
            "features": "penultimate layer of the data set's classifier (ONNX, onnxruntime)",
            "real_set": f"the {len(real.dataset.test_images)} test images",
            "real_train_vs_test": f"{real.num_real_subset} train images, fixed random subset "
            f"(seed {REAL_SUBSET_SEED}) outside the validation split",
            "blur": "the same train subset, scipy.ndimage.gaussian_filter over height and "
            "width, rounded back to uint8 (disjoint from the test set it is compared with)",
            "three_classes_removed": f"the same train subset without classes "
            f"{list(REMOVED_CLASSES)}",
            "kid": "unbiased MMD^2, cubic polynomial kernel (Binkowski et al. 2018), up to "
            "5,000 samples a side; 95% interval from the delete-one jackknife",
            "prdc": f"precision/recall k={PR_K}, density/coverage k={DC_K} (Naeem et al. 2020); "
            "fake sets larger than the test set are subsampled to its size",
        },
    }


def evaluate_reference(
    dataset_name: str, *, num_samples: int = 10000, data_dir: Path | None = None
) -> dict[str, Any]:
    """The real-data floor and calibration points alone (what a perfect and some flawed
    generators would score)."""
    real = real_reference(dataset_name, num_samples=num_samples, data_dir=data_dir)
    return {**_header(real), **_reference_section(real)}


def _memorisation(images: np.ndarray, real: RealReference) -> dict[str, Any]:
    generated_nn, nearest = nearest_neighbour_distances(
        _pixels(images), _pixels(real.dataset.train_images), progress="nearest train image"
    )
    baseline = real.test_to_train_pixel_nn
    threshold = float(np.percentile(baseline, MEMORISATION_PERCENTILE))
    fraction = float(np.mean(generated_nn < threshold))
    baseline_fraction = float(np.mean(baseline < threshold))
    return {
        "space": "pixels in [0, 1], L2 over 28x28, nearest image in the full train set",
        "threshold": round(threshold, 4),
        "threshold_rule": f"{MEMORISATION_PERCENTILE:g}st percentile of test-to-train distances",
        "fraction_below_threshold": round(fraction, 4),
        "test_fraction_below_threshold": round(baseline_fraction, 4),
        "ratio_to_test": round(fraction / max(baseline_fraction, 1e-12), 3),
        "median_distance": round(float(np.median(generated_nn)), 4),
        "test_median_distance": round(float(np.median(baseline)), 4),
        "min_distance": round(float(generated_nn.min()), 4),
        "closest_sample": int(np.argmin(generated_nn)),
        "closest_train_index": int(nearest[np.argmin(generated_nn)]),
        "suspected": bool(fraction > MEMORISATION_FLAG_FACTOR * baseline_fraction),
        "flag_rule": f"suspected when the fraction exceeds {MEMORISATION_FLAG_FACTOR:g}x the "
        "test images' fraction",
    }


def evaluate_images(
    images: np.ndarray,
    dataset_name: str,
    *,
    data_dir: Path | None = None,
    num_real_subset: int = 10000,
    classes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Score uint8 images (N, 28, 28, 1) against the data set; the full report."""
    started = time.monotonic()
    real = real_reference(dataset_name, num_samples=num_real_subset, data_dir=data_dir)
    reference_seconds = time.monotonic() - started
    report = score_images(images, real, classes=classes)
    report["seconds"] = {"reference": round(reference_seconds, 1), **report["seconds"]}
    return report


def class_fidelity(
    predicted: np.ndarray, intended: np.ndarray, class_names: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """For a class-conditional model: per class c, the share of the images asked for as c
    that the evaluator's classifier labels c; with the mean and the lowest class."""
    per_class = {}
    for index, name in enumerate(class_names):
        asked = intended == index
        if asked.any():
            per_class[name] = round(float(np.mean(predicted[asked] == index)), 4)
    values = list(per_class.values())
    return {
        "per_class": per_class,
        "mean": round(float(np.mean(values)), 4),
        "min": round(float(min(values)), 4),
        "min_class": min(per_class, key=lambda k: per_class[k]),
        "rule": "share of the images generated for class c that the evaluator's classifier "
        "labels c",
    }


def real_class_fidelity(real: RealReference) -> dict[str, Any]:
    """The same measure on the real test images (their labels as the asked-for class): what
    the classifier itself reaches per class, the ceiling a generator's fidelity is read
    against (a class the classifier confuses on real images caps every generator's)."""
    data = real.dataset
    reference = class_fidelity(real.test_predictions, data.test_labels, data.class_names)
    return {key: reference[key] for key in ("per_class", "mean", "min", "min_class")}


def score_images(
    images: np.ndarray, real: RealReference, *, classes: np.ndarray | None = None
) -> dict[str, Any]:
    """The report for uint8 images (N, 28, 28, 1) against a prepared real reference;
    `classes` (the class each image was generated for) adds the class fidelity."""
    timings = {}
    mark = time.monotonic()
    features, logits = real.extractor(images, progress="features: generated")
    generated = _feature_metrics(features, logits, real)
    if classes is not None:
        generated["class_fidelity"] = class_fidelity(
            np.argmax(logits, axis=1), np.asarray(classes), real.dataset.class_names
        )
        generated["class_fidelity"]["real_test"] = real_class_fidelity(real)
    timings["features_and_metrics"] = time.monotonic() - mark
    mark = time.monotonic()
    generated["memorisation"] = _memorisation(images, real)
    timings["memorisation"] = time.monotonic() - mark

    fd = generated["frechet_distance"]
    ratios = {
        f"fd_over_{key}": round(fd / max(real.reference[key]["frechet_distance"], 1e-12), 4)
        for key in REFERENCE_KEYS
    }
    return {
        **_header(real),
        "num_samples": len(images),
        "generated": generated,
        "ratios": ratios,
        **_reference_section(real),
        "seconds": {name: round(value, 1) for name, value in timings.items()},
    }


def evaluate_sampler(
    sampler: Sampler,
    dataset_name: str,
    *,
    num_samples: int = 10000,
    seed: int = 0,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Generate `num_samples` images (seeds seed..seed+N-1) and score them; a JSON-able report."""
    started = time.monotonic()
    images = sample_images(sampler, num_samples, seed)
    sampling_seconds = time.monotonic() - started
    classes = (
        np.arange(seed, seed + num_samples) % sampler.num_classes if sampler.num_classes else None
    )
    report = evaluate_images(
        images, dataset_name, data_dir=data_dir, num_real_subset=num_samples, classes=classes
    )
    report["sampler"] = sampler.description
    report["latents"] = (
        f"seeds {seed}..{seed + num_samples - 1}, latent_for_seed(seed, {sampler.latent_dim}) "
        "(numpy default_rng(seed).standard_normal, float32)"
    )
    if sampler.num_classes:
        report["latents"] += (
            f"; seed s generated as class s % {sampler.num_classes} (classes uniform)"
        )
    report["seconds"] = {
        "sampling": round(sampling_seconds, 1),
        **report["seconds"],
        "total": round(time.monotonic() - started, 1),
    }
    return report


# --- scoring during training ---------------------------------------------------------


VALIDATION_FIRST_SEED = 1_000_000  # in-training samples use seeds apart from the reports'


class ValidationScorer:
    """Scores generated images against the validation split (training/data.py), never
    the test set: FD, precision, recall and coverage with the evaluator's classifier.

    Built once per training run (validation features and k-NN radii); a call costs the
    generated images' features and one k-NN pass, seconds for a few thousand images.
    """

    def __init__(
        self, dataset_name: str, validation_images: np.ndarray, *, data_dir: Path | None = None
    ) -> None:
        if len(validation_images) <= DC_K:
            raise ValueError(
                f"{len(validation_images)} validation images are too few to score against"
            )
        self.extractor = FeatureExtractor(ensure_classifier(dataset_name, data_dir=data_dir))
        self.features, _ = self.extractor(validation_images)
        self.radii = kth_neighbour_radii(self.features, (PR_K, DC_K))

    @property
    def num_images(self) -> int:
        return len(self.features)

    def __call__(self, images: np.ndarray) -> dict[str, float]:
        features, _ = self.extractor(images)
        prdc_features = features
        if len(features) > len(self.features):  # like with like, as in the full report
            pick = np.random.default_rng(PRDC_SUBSET_SEED).choice(
                len(features), len(self.features), replace=False
            )
            prdc_features = features[np.sort(pick)]
        scores = prdc(self.features, prdc_features, pr_k=PR_K, dc_k=DC_K, real_radii=self.radii)
        return {
            "frechet_distance": frechet_distance(features, self.features),
            "precision": scores["precision"],
            "recall": scores["recall"],
            "coverage": scores["coverage"],
        }


# --- presentation and the CLI entry point ------------------------------------------------


def _cell_width(column: str) -> int:
    return 18 if column == "KID 95% CI" else 10


def _cell(key: str, value: Any) -> str:
    if value is None:  # a report from before the metric existed
        return "-"
    if key == "frechet_distance":
        return f"{value:.2f}"
    if key == "kid":
        return f"{value:.4f}"
    if key == "kid_ci95":
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
    return f"{value:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """A terminal table: generated samples beside the real floor and calibration points."""
    columns = (
        "FD",
        "KID",
        "KID 95% CI",
        "prec",
        "recall",
        "density",
        "cover",
        "KL(unif)",
        "min cls",
        "max cls",
    )
    keys = (
        "frechet_distance",
        "kid",
        "kid_ci95",
        "precision",
        "recall",
        "density",
        "coverage",
        "class_kl_from_uniform",
        "min_class_fraction",
        "max_class_fraction",
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    if "generated" in report:
        rows.append(("generated", report["generated"]))
    labels = {
        "real_train_vs_test": "real train vs test",
        "blur_sigma_0.5": "train blur sigma 0.5",
        "blur_sigma_1": "train blur sigma 1",
        "three_classes_removed": "3 classes removed",
    }
    rows += [(labels[key], report["reference"][key]) for key in REFERENCE_KEYS]
    width = max(len(label) for label, _ in rows) + 2
    lines = [
        f"{report['dataset']}: classifier {report['classifier']['version']} "
        f"(test accuracy {report['classifier']['test_accuracy']:.4f})",
        "",
        " " * width + "".join(f"{c:>{_cell_width(c)}}" for c in columns),
    ]
    for label, metrics in rows:
        cells = "".join(
            f"{_cell(k, metrics.get(k)):>{_cell_width(c)}}"
            for c, k in zip(columns, keys, strict=True)
        )
        lines.append(f"{label:<{width}}{cells}")
    if "generated" in report:
        generated = report["generated"]
        mem = generated["memorisation"]
        hist = ", ".join(f"{name} {f:.1%}" for name, f in generated["class_histogram"].items())
        lines += [
            "",
            f"samples: {report['num_samples']} ({report.get('latents', 'given images')})",
            f"class histogram: {hist}",
            *(
                [
                    "class fidelity: mean {mean:.3f}, lowest {min:.3f} ({min_class})".format(
                        **report["generated"]["class_fidelity"]
                    )
                ]
                if "class_fidelity" in report["generated"]
                else []
            ),
            "ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in report["ratios"].items()),
            f"memorisation: {mem['fraction_below_threshold']:.2%} of samples within the "
            f"test set's 1st-percentile distance to train (test: "
            f"{mem['test_fraction_below_threshold']:.2%}); median nearest-train distance "
            f"{mem['median_distance']:.2f} (test {mem['test_median_distance']:.2f}) -> "
            + ("SUSPECTED" if mem["suspected"] else "not suspected"),
        ]
    if not report.get("reference_ok", True):
        lines.append(
            "WARNING: reference points out of order: " + "; ".join(report["reference_problems"])
        )
    if "seconds" in report:
        lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    return "\n".join(lines)


def _run_dataset(run_dir: Path) -> str | None:
    """The data set a training run folder records in its config.json (`dataset`), if any."""
    path = run_dir / "config.json"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dataset = content.get("dataset") if isinstance(content, dict) else None
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    return dataset if isinstance(dataset, str) else None


def evaluate_command(
    target: Path,
    dataset: str | None,
    num_samples: int,
    seed: int,
    output: Path | None,
    *,
    echo: bool = True,
) -> dict[str, Any]:
    """`imagegen evaluate TARGET`: a models/<name> folder (ONNX) or a training run folder
    (Keras). Prints the table (unless `echo` is false), writes the JSON report to
    `output` when given, and returns the report."""
    target = Path(target)
    if (target / CARD_FILENAME).is_file():
        card = ModelCard.load(target / CARD_FILENAME)
        card_dataset = card.dataset.get("name")
        if dataset is not None and card_dataset is not None and dataset != card_dataset:
            raise ValueError(f"{target} was trained on {card_dataset!r}, not {dataset!r}")
        dataset = dataset or card_dataset
        sampler = onnx_sampler(target)
    elif target.is_dir():
        from training.train import keras_sampler

        dataset = dataset or _run_dataset(target)
        sampler = keras_sampler(target)
    else:
        raise FileNotFoundError(f"{target}: neither a model folder ({CARD_FILENAME}) nor a run")
    if dataset is None:
        raise ValueError(f"{target} does not say which data set it models; pass --dataset")
    report = evaluate_sampler(sampler, dataset, num_samples=num_samples, seed=seed)
    report["target"] = str(target)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if echo:
        print(format_report(report))
    return report
