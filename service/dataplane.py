"""The transport-free serving core: served models, their batchers, and latents to PNG images.

The HTTP routes call this; it calls the batcher and the runtime and turns their exceptions
into the named service errors.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeGuard, TypeVar

import numpy as np

from service import batching, imaging
from service.batching.isolation import ItemFailed, isolate_failures
from service.errors import (
    BatcherFailed,
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    QueueFull,
    ShuttingDown,
    TooManyItems,
    quoted,
)
from service.imaging import grid_shape
from service.interpolation import LatentOverflow, Method, interpolate
from service.metrics import Metrics
from service.runtime.card import (
    MAX_SEED,
    ModelCard,
    class_for_seed,
    class_weights,
    latent_for_seed,
)
from service.runtime.providers import plan_for_settings
from service.runtime.registry import LoadedModel, load_models
from service.settings import Settings

logger = logging.getLogger(__name__)

MAX_OUTPUT_PIXELS = 64 * 1024 * 1024  # one response image, after scaling and tiling


_SEED_TEXT = re.compile(r"[0-9]{1,19}")


def parse_seed(text: str) -> int:
    """A seed written in a URL path: decimal digits, 0 <= seed < 2**63; 422 otherwise."""
    if not _SEED_TEXT.fullmatch(text) or int(text) >= MAX_SEED:
        raise InvalidInput(f"seed must be an integer 0 <= seed < 2**63, got {quoted(text)}")
    return int(text)


def check_output_pixels(pixels: int) -> None:
    """422 when one response would hold more than MAX_OUTPUT_PIXELS pixels."""
    if pixels > MAX_OUTPUT_PIXELS:
        raise InvalidInput(
            f"the response would have {pixels} pixels; the limit is {MAX_OUTPUT_PIXELS}"
        )


def random_seed(count: int = 1) -> int:
    """A random first seed for `count` consecutive seeds, all below 2**63."""
    return secrets.randbelow(MAX_SEED - count + 1)


def _one_hot(index: int, num_classes: int) -> np.ndarray:
    row: np.ndarray = class_weights(np.array([index]), num_classes)[0]
    return row


@dataclass(frozen=True, slots=True)
class ImageJob:
    """One image for a model's batcher: a seed's latent or a given latent row, scaled by
    `truncation`; with `png_scale`, PNG-encoded at that scale in the inference thread.

    Turning seeds into latents (a fresh numpy generator each, about 20 us) and encoding small
    PNGs happen in the model's inference thread, for the whole batch at once, rather than on
    the event loop per request: on the single-image route they were a third of the loop's
    time. The results are the same arrays and bytes wherever they are computed.
    """

    seed: int | None = None
    latent: np.ndarray | None = None
    truncation: float = 1.0
    png_scale: int = 0  # 0: the uint8 image; n >= 1: its PNG bytes, upscaled n times

    def class_row(self, num_classes: int) -> np.ndarray:
        """This job's float32 class weights `[num_classes]` for a conditional model: a job
        without a class is its seed's class, seed % num_classes (the seed contract)."""
        assert self.seed is not None, "a latent job for a conditional model has a class"
        return _one_hot(class_for_seed(self.seed, num_classes), num_classes)

    def latent_row(self, latent_dim: int) -> np.ndarray:
        if self.latent is not None:
            row = self.latent
        else:
            assert self.seed is not None, "an ImageJob has a seed or a latent"
            row = latent_for_seed(self.seed, latent_dim)
        return row if self.truncation == 1.0 else row * np.float32(self.truncation)


@dataclass(frozen=True, slots=True)
class ClassImageJob(ImageJob):
    """An ImageJob with a class for a conditional model: a class index, or a row of class
    weights (a blend, e.g. along an interpolation). A subclass, so that unconditional
    requests build exactly the ImageJob they built before (the single-image route's
    event-loop cost is measured per request)."""

    class_index: int | None = None
    class_weights: np.ndarray | None = None

    def class_row(self, num_classes: int) -> np.ndarray:
        if self.class_weights is not None:
            return self.class_weights
        if self.class_index is None:
            return ImageJob.class_row(self, num_classes)
        return _one_hot(self.class_index, num_classes)


JobResult = np.ndarray | bytes


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class ServedModel:
    """One loaded model with its own batcher and inference thread."""

    def __init__(self, loaded: LoadedModel, settings: Settings, metrics: Metrics) -> None:
        self.loaded = loaded
        self.card: ModelCard = loaded.card
        self.name = loaded.name
        self.num_classes = self.card.num_classes  # 0: unconditional
        self.classes: list[str] = (
            list(self.card.conditioning.classes) if self.card.conditioning else []
        )
        self._class_index = {name.casefold(): index for index, name in enumerate(self.classes)}
        self._settings = settings
        self._inference_seconds = metrics.inference_seconds.labels(model=self.name)
        self._images_generated = metrics.images_generated.labels(model=self.name)
        # The batcher's scheduling thread is the model's inference thread (onnxruntime
        # parallelises inside a run and releases the GIL), and a second thread encodes a
        # batch's PNGs while the next batch runs in the model.
        self.batcher: batching.DynamicBatcher[ImageJob, JobResult | ItemFailed] = (
            batching.DynamicBatcher(
                # A failed batch is retried image by image: one poisoned latent then fails
                # only its own request, not every request that shared its batch.
                isolate_failures(self._run_model, name=f"model {self.name}"),
                finish_fn=_encode_jobs,
                needs_finish=_needs_png,
                max_batch_size=settings.max_batch_size,
                max_batch_delay_s=settings.max_batch_delay_s,
                max_queue_size=settings.max_queue_size,
                observer=metrics.batch_observer(self.name),
                name=f"model {self.name}",
                priority_max_items=settings.priority_max_items,
                thread_name=f"infer-{self.name}",
                finish_thread_name=f"encode-{self.name}",
            )
        )

    @property
    def providers(self) -> list[str]:
        return self.loaded.providers

    def start(self) -> None:
        self.batcher.start()

    async def close(self, grace_s: float) -> None:
        await self.batcher.close(grace_s)

    def _run_model(self, jobs: list[ImageJob]) -> list[JobResult]:
        """In the inference thread: the jobs' latents (and class rows), one model run."""
        dim = self.card.latent_dim
        latents = np.stack([job.latent_row(dim) for job in jobs])
        started = time.perf_counter()
        if self.num_classes:
            weights = np.stack([job.class_row(self.num_classes) for job in jobs])
            images = self.loaded.generator.generate(latents, weights)
        else:
            images = self.loaded.generator.generate(latents)
        self._inference_seconds.observe(time.perf_counter() - started)
        self._images_generated.inc(len(images))
        if len(images) != len(jobs):
            raise batching.BatchSizeMismatch(
                f"model returned {len(images)} images for {len(jobs)} latents"
            )
        if not self.batcher.queued_items:
            # No batch waits for the model: encoding here saves the lone request a thread hop.
            # (Read from this thread without a lock: a stale count only picks the other path.)
            return _encode_jobs(jobs, list(images))
        return list(images)

    # -- classes (class-conditional models) -------------------------------------------------

    def _class_list(self) -> str:
        return ", ".join(f"{index} {quoted(name)}" for index, name in enumerate(self.classes))

    def resolve_class(self, value: str | int | None, where: str = "class") -> int | None:
        """A class given by name (case-insensitive) or index -> its index; None stays None.

        422 when the model is not class-conditional, or the class is not one of its own
        (the message lists them).
        """
        if value is None:
            return None
        if not self.num_classes:
            raise InvalidInput(
                f"model {self.name} is not class-conditional; {where} is not accepted"
            )
        if isinstance(value, str):
            index = self._class_index.get(value.strip().casefold())
            if index is None and value.strip().isdigit():
                index = int(value.strip())
        else:
            index = value
        if index is None or not 0 <= index < self.num_classes:
            raise InvalidInput(
                f"{where} {quoted(str(value))} is not a class of model {self.name}; give a "
                f"name (case-insensitive) or an index: {self._class_list()}"
            )
        return index

    def class_name(self, index: int) -> str:
        return self.classes[index]

    def effective_class(self, seed: int | None, index: int | None, where: str = "latent") -> int:
        """The class an image is generated as: the given one, or seed % num_classes; 422 for
        a latent without a class."""
        if index is not None:
            return index
        if seed is None:
            raise InvalidInput(
                f'model {self.name} is class-conditional: a {where} needs a "class" '
                f"(a name or an index: {self._class_list()})"
            )
        return class_for_seed(seed, self.num_classes)

    def class_weight_rows(self, indices: Sequence[int]) -> np.ndarray:
        """One-hot float32 class weights `[n, num_classes]`."""
        return class_weights(np.asarray(indices, dtype=np.int64), self.num_classes)

    # -- latents -----------------------------------------------------------------------------

    def latents_for_seeds(self, seeds: Sequence[int], truncation: float = 1.0) -> np.ndarray:
        """The documented seed contract, scaled by `truncation`: `[n, latent_dim]` float32."""
        latents = np.stack([latent_for_seed(seed, self.card.latent_dim) for seed in seeds])
        return self._truncate(latents, truncation)

    def latents_from_values(
        self, values: Sequence[Sequence[float]], truncation: float = 1.0
    ) -> np.ndarray:
        """Client-given latents, checked against the model's latent_dim."""
        for index, latent in enumerate(values):
            if len(latent) != self.card.latent_dim:
                where = "latent" if len(values) == 1 else f"latents[{index}]"
                raise InvalidInput(
                    f"{where} has {len(latent)} values; model {self.name} needs "
                    f"latent_dim={self.card.latent_dim}"
                )
        return self._truncate(np.asarray(values, dtype=np.float32), truncation)

    def check_output_size(self, count: int, scale: int, columns: int | None = None) -> None:
        """422 when `count` images at `scale`, tiled in `columns`, would be too many pixels."""
        rows, cols = grid_shape(count, columns)
        image = self.card.image
        check_output_pixels(rows * image.height * scale * cols * image.width * scale)

    def latent_point(
        self, seed: int | None, latent: Sequence[float] | None, where: str, truncation: float
    ) -> np.ndarray:
        """One latent row from a seed or from given values (checked), scaled by truncation."""
        row: np.ndarray
        if seed is not None:
            row = self.latents_for_seeds([seed], truncation)[0]
            return row
        assert latent is not None, "a point has a seed or a latent"
        if len(latent) != self.card.latent_dim:
            raise InvalidInput(
                f"{where}.latent has {len(latent)} values; model {self.name} needs "
                f"latent_dim={self.card.latent_dim}"
            )
        row = self.latents_from_values([latent], truncation)[0]
        return row

    def interpolation_latents(
        self, start: np.ndarray, end: np.ndarray, steps: int, method: Method
    ) -> np.ndarray:
        """`steps` latents from `start` to `end`; 422 when a point leaves float32."""
        try:
            return interpolate(start, end, steps, method)
        except LatentOverflow as error:
            raise InvalidInput(str(error)) from None

    @staticmethod
    def _truncate(latents: np.ndarray, truncation: float) -> np.ndarray:
        if truncation == 1.0:
            return latents
        return latents * np.float32(truncation)

    # -- images ------------------------------------------------------------------------------

    async def images(
        self, latents: np.ndarray, class_weights: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """uint8 `[H, W, C]` images for `latents` (with their class-weight rows for a
        conditional model), through the batcher."""
        if class_weights is None:
            jobs = [ImageJob(latent=row) for row in latents]
        else:
            jobs = [
                ClassImageJob(latent=row, class_weights=weights)
                for row, weights in zip(latents, class_weights, strict=True)
            ]
        results = await self.run(jobs)
        return results  # type: ignore[return-value]  # no job asked for PNG bytes

    def jobs(
        self,
        *,
        seeds: Sequence[int] | None = None,
        latents: np.ndarray | None = None,
        truncation: float = 1.0,
        png_scale: int = 0,
        classes: Sequence[int] | None = None,
    ) -> list[ImageJob]:
        """Batcher jobs for seeds or latent rows; with `classes` (a conditional model's class
        index per row, already resolved) they carry their class."""
        if latents is None:
            assert seeds is not None, "give seeds or latents"
            sources: Iterable[tuple[int | None, np.ndarray | None]] = zip(seeds, repeat(None))
        else:
            sources = zip(repeat(None), latents)
        if classes is None:
            return [ImageJob(seed, latent, truncation, png_scale) for seed, latent in sources]
        return [
            ClassImageJob(seed, latent, truncation, png_scale, index)
            for (seed, latent), index in zip(sources, classes, strict=True)
        ]

    async def pngs(
        self,
        *,
        seeds: Sequence[int] | None = None,
        latents: np.ndarray | None = None,
        truncation: float = 1.0,
        scale: int = 1,
        classes: Sequence[int] | None = None,
    ) -> list[bytes]:
        """PNG bytes for seeds or latent rows, through the batcher, upscaled `scale` times;
        `classes`: a conditional model's class index per row (already resolved).

        Small images are encoded with their batch in the model's encoder thread, while the
        next batch runs; larger ones in a worker thread of their own.
        """
        image = self.card.image
        in_batch = image.height * image.width * scale * scale <= INLINE_PNG_MAX_PIXELS
        jobs = self.jobs(
            seeds=seeds,
            latents=latents,
            truncation=truncation,
            png_scale=scale if in_batch else 0,
            classes=classes,
        )
        results = await self.run(jobs)
        if in_batch:
            return results  # type: ignore[return-value]  # every job asked for PNG bytes
        return await encode_pngs(results, scale)  # type: ignore[arg-type]

    async def run(self, jobs: list[ImageJob]) -> list[JobResult]:
        """Each job's image (or PNG), through the batcher; errors as service errors."""
        try:
            results = await self.batcher.submit(jobs, timeout_s=self._settings.request_timeout_s)
        except batching.QueueFull as error:
            raise QueueFull(f"model {self.name} is busy: {error}") from error
        except batching.DeadlineExceeded as error:
            raise DeadlineExceeded(
                f"model {self.name}: request not done within "
                f"{self._settings.request_timeout_ms:g} ms"
            ) from error
        except batching.BatcherClosed as error:
            raise ShuttingDown(f"model {self.name} is shutting down") from error
        except batching.SchedulerRestarting as error:
            raise NotReady(str(error)) from error
        except batching.SchedulerFailed as error:
            raise BatcherFailed(
                f"model {self.name}: its batch scheduler failed while this request waited "
                "(logged); it is restarting, retry shortly"
            ) from error
        except Exception as error:
            logger.exception("model %s: inference failed", self.name)
            raise InferenceFailed(f"model {self.name}: inference failed") from error
        done = [result for result in results if not isinstance(result, ItemFailed)]
        if len(done) < len(results):
            failed = next(result for result in results if isinstance(result, ItemFailed))
            logger.error(
                "model %s: inference failed for %d of %d images: %s",
                self.name,
                len(results) - len(done),
                len(results),
                failed.error,
            )
            raise InferenceFailed(f"model {self.name}: inference failed")
        return done

    def image_etag(
        self, seed: int, truncation: float, scale: int, class_index: int | None = None
    ) -> str:
        """Strong ETag of a seeded image: its bytes depend only on these and the model file
        (and, for a conditional model, the class it is generated as)."""
        key = f"{self.card.onnx.sha256}:{seed}:{truncation!r}:{scale}"
        if self.num_classes:
            key += f":class={self.effective_class(seed, class_index)}"
        return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'

    def info(self) -> dict[str, Any]:
        card = self.card
        return {
            "name": card.name,
            "version": card.version,
            "kind": card.kind,
            "description": card.description,
            "latent_dim": card.latent_dim,
            "image": card.image.model_dump(mode="json"),
            "dataset": card.dataset,
            "training": card.training,
            "metrics": card.metrics,
            "onnx": card.onnx.model_dump(mode="json"),
            "providers": self.providers,
            **(
                {
                    "classes": self.classes,
                    "conditioning": card.conditioning.model_dump(mode="json"),
                }
                if card.conditioning is not None
                else {}
            ),
        }


# Up to this many output pixels, PNGs are encoded on the event loop: a 28x28 image takes about
# 40 us to encode, while the hop to a worker thread and back costs as much CPU again (measured
# with the load-test tool, where it was a tenth of a single-image request's server time).
INLINE_PNG_MAX_PIXELS = 4096


_Image = TypeVar("_Image", np.ndarray, JobResult, JobResult | ItemFailed)


def _wants_png(image: object, job: ImageJob) -> TypeGuard[np.ndarray]:
    """The job asked for a PNG and its image is still pixels (not bytes, not a failure)."""
    return bool(job.png_scale) and isinstance(image, np.ndarray)


def _needs_png(jobs: Sequence[ImageJob], images: Sequence[JobResult | ItemFailed]) -> bool:
    """Whether any job still waits for its PNG (the inference thread may have encoded them)."""
    return any(_wants_png(image, job) for job, image in zip(jobs, images, strict=True))


def _encode_jobs(jobs: Sequence[ImageJob], images: Sequence[_Image]) -> list[_Image | bytes]:
    """PNG bytes for the jobs that asked for them (an image that failed stays a failure)."""
    return [
        imaging.encode_png(image, job.png_scale) if _wants_png(image, job) else image
        for job, image in zip(jobs, images, strict=True)
    ]


async def encode_pngs(images: Sequence[np.ndarray], scale: int = 1) -> list[bytes]:
    """PNG bytes of each image: small ones at once, larger ones in a worker thread."""
    pixels = sum(image.shape[0] * image.shape[1] for image in images) * scale * scale
    if pixels <= INLINE_PNG_MAX_PIXELS:
        return [imaging.encode_png(image, scale) for image in images]
    return await asyncio.to_thread(lambda: [imaging.encode_png(image, scale) for image in images])


async def encode_grid_png(
    images: Sequence[np.ndarray], columns: int | None = None, scale: int = 1
) -> bytes:
    """One grid PNG of the images, encoded in a worker thread."""
    return await asyncio.to_thread(imaging.encode_grid_png, images, columns, scale)


async def encode_gif(
    images: Sequence[np.ndarray], scale: int, frame_duration_ms: int, bounce: bool
) -> bytes:
    """An animated GIF of the frames, encoded in a worker thread (palettes are CPU work)."""
    return await asyncio.to_thread(
        imaging.encode_gif, list(images), scale, frame_duration_ms, bounce
    )


class DataPlane:
    """All served models and the service's phase (starting, ready, draining, stopped)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.invalid_models: list[str] = []
        self.phase = Phase.STARTING

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY and bool(self.models) and not self.unhealthy_models()

    def unhealthy_models(self) -> list[str]:
        """Models whose batch scheduler failed and is being restarted."""
        return [name for name, model in self.models.items() if not model.batcher.healthy]

    async def start(self) -> None:
        """Verify, load and warm up every model (in a worker thread), then start batching."""
        settings = self.settings
        started = time.perf_counter()
        # ModelLoadError and ProviderUnavailable propagate: the server prints their message.
        plan = plan_for_settings(settings)
        result = await asyncio.to_thread(
            load_models,
            settings.models_dir,
            plan,
            intra_op_threads=settings.intra_op_threads,
            batch_padding=settings.batch_padding,
            max_batch_size=settings.max_batch_size,
            skip_invalid=settings.skip_invalid_models,
        )
        self.invalid_models = [str(error) for error in result.invalid]
        for name, loaded in result.models.items():
            served = ServedModel(loaded, settings, self.metrics)
            served.start()
            self.models[name] = served
        self.phase = Phase.READY
        logger.info(
            "ready: %d model(s) [%s] in %.2f s",
            len(self.models),
            ", ".join(self.models),
            time.perf_counter() - started,
        )

    async def stop(self, grace_s: float) -> None:
        """Refuse new work, finish queued work within `grace_s`, release the models."""
        self.phase = Phase.DRAINING
        await asyncio.gather(*(model.close(grace_s) for model in self.models.values()))
        self.phase = Phase.STOPPED

    def find(self, name: str) -> ServedModel:
        """A served model by name (for descriptions); 404 when unknown."""
        model = self.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {quoted(name)} (served: {known})")
        return model

    def check_item_count(self, count: int) -> None:
        """413 when one request asks for more images than the limit."""
        if count > self.settings.max_items_per_request:
            raise TooManyItems(
                f"{count} images requested; the limit is {self.settings.max_items_per_request}"
            )

    def serving(self, name: str) -> ServedModel:
        """A model that may take work now; 503 when not ready or draining, 404 when unknown."""
        if self.phase is Phase.STARTING:
            raise NotReady("models are still loading")
        if self.phase is not Phase.READY:
            raise ShuttingDown("the service is shutting down")
        return self.find(name)
