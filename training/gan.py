"""The GAN: a keras.Model whose `train_step` updates discriminator then generator.

Loss: non-saturating GAN loss with one-sided label smoothing on the real logits, plus an
exponential moving average (EMA) of the generator's weights that is what gets served:
EMA generators give markedly cleaner, more stable samples than the raw weights for the
same training cost (see docs/quality.md for the measured effect). Before the EMA generator
is sampled or exported its BatchNorm statistics are recomputed for its own weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from training.augment import diff_augment, parse_policy
from training.batchnorm import DEFAULT_SEED, default_latents, recompute_batchnorm_statistics
from training.networks import build_discriminator, build_generator

AUGMENT_SEED_OFFSET = 104729  # the augmentations' random streams, apart from the noise's

BatchNormStatistics = Literal["recompute", "copied"]


class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`initial` until step `start`, then linearly down to 0 at step `end` (and after).

    Keyed on the optimizer's own step count, which the checkpoint holds, so a resumed run
    continues the decay exactly where it stopped."""

    def __init__(self, initial: float, start: int, end: int) -> None:
        self.initial, self.start, self.end = float(initial), int(start), int(end)

    def __call__(self, step: Any) -> Any:
        done = (keras.ops.cast(step, "float32") - self.start) / float(self.end - self.start)
        return self.initial * (1.0 - keras.ops.clip(done, 0.0, 1.0))

    def get_config(self) -> dict[str, Any]:
        return {"initial": self.initial, "start": self.start, "end": self.end}


class GAN(keras.Model):
    """Generator, discriminator and the EMA copy of the generator that is exported."""

    kind = "gan"
    output_range = (-1.0, 1.0)

    def __init__(
        self,
        latent_dim: int = 64,
        *,
        generator_width: int = 128,
        discriminator_width: int = 64,
        discriminator_depth: int = 2,
        dropout: float = 0.3,
        spectral_norm: bool = False,
        learning_rate: float = 2e-4,
        discriminator_learning_rate: float | None = None,
        beta_1: float = 0.5,
        real_label: float = 0.9,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        diffaugment: str = "",
        ema_decay: float = 0.999,
        lr_decay_start: int = 0,
        lr_decay_end: int = 0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """The defaults are the shipped recipe. The recipe comparison's knobs
        (training/recipes.py): the discriminator's `discriminator_width`,
        `discriminator_depth` (stride-2 convolutions), `dropout` and `spectral_norm`;
        `discriminator_learning_rate` (two time-scales, Heusel et al. 2017; default: the
        generator's); `real_label` (1.0: no smoothing); a lazy R1 penalty on real images
        (Mescheder et al. 2018) of weight `r1_gamma`, applied every `r1_every` steps and
        scaled by it; `diffaugment`, a DiffAugment policy such as "translation,cutout";
        `lr_decay_start`/`lr_decay_end`: both learning rates fall linearly to zero between
        these two training steps (0/0: constant rates)."""
        super().__init__(**kwargs)
        if r1_every < 1:
            raise ValueError(f"r1_every must be at least 1, not {r1_every}")
        if lr_decay_end and not 0 <= lr_decay_start < lr_decay_end:
            raise ValueError(
                "the learning-rate decay must start at a step >= 0 before it ends, "
                f"not {lr_decay_start}..{lr_decay_end}"
            )
        self.latent_dim = latent_dim
        self.real_label = real_label
        self.ema_decay = ema_decay
        self.noise_seed = seed
        self.r1_gamma = float(r1_gamma)
        self.r1_every = int(r1_every)
        self.augment_policy = parse_policy(diffaugment) if diffaugment else ()
        d_learning_rate = discriminator_learning_rate or learning_rate
        self.hyperparameters = {
            "latent_dim": latent_dim,
            "generator_width": generator_width,
            "discriminator_width": discriminator_width,
            "discriminator_depth": discriminator_depth,
            "dropout": dropout,
            "spectral_norm": spectral_norm,
            "learning_rate": learning_rate,
            "discriminator_learning_rate": d_learning_rate,
            "beta_1": beta_1,
            "real_label": real_label,
            "r1_gamma": self.r1_gamma,
            "r1_every": self.r1_every,
            "diffaugment": ",".join(self.augment_policy),
            "ema_decay": ema_decay,
            "lr_decay": (
                f"linear to 0 from step {lr_decay_start} to {lr_decay_end}"
                if lr_decay_end
                else "none"
            ),
            "loss": "non-saturating"
            + (", one-sided label smoothing" if real_label < 1.0 else "")
            + (", lazy R1" if self.r1_gamma else ""),
        }
        discriminator = {
            "width": discriminator_width,
            "depth": discriminator_depth,
            "dropout": dropout,
            "spectral_norm": spectral_norm,
        }
        self.generator, self.ema_generator, self.discriminator = self._build_networks(
            latent_dim, generator_width, discriminator
        )
        self.ema_generator.set_weights(self.generator.get_weights())
        g_rate: float | LinearDecay = learning_rate
        d_rate: float | LinearDecay = d_learning_rate
        if lr_decay_end:
            g_rate = LinearDecay(learning_rate, lr_decay_start, lr_decay_end)
            d_rate = LinearDecay(d_learning_rate, lr_decay_start, lr_decay_end)
        self.g_optimizer = keras.optimizers.Adam(g_rate, beta_1=beta_1)
        self.d_optimizer = keras.optimizers.Adam(d_rate, beta_1=beta_1)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def _build_networks(
        self, latent_dim: int, generator_width: int, discriminator: dict[str, Any]
    ) -> tuple[keras.Model, keras.Model, keras.Model]:
        """(generator, its EMA copy, discriminator); a subclass may build other ones.
        `discriminator`: build_discriminator's keyword arguments."""
        return (
            build_generator(latent_dim, generator_width),
            build_generator(latent_dim, generator_width, name="ema_generator"),
            build_discriminator(**discriminator),
        )

    @property
    def served(self) -> keras.Model:
        """The network the service runs."""
        return self.ema_generator

    def _step_seed(self, offset: int = 0) -> tf.Tensor:
        """A stateless-RNG seed keyed on (step, replica), shifted by `offset` for each stream:
        reproducible, resumable and distinct per replica under a distribution strategy."""
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        return tf.stack(
            [
                tf.cast(self.g_optimizer.iterations, tf.int32) + self.noise_seed + offset,
                tf.cast(replica_id, tf.int32),
            ]
        )

    def _noise(self, batch_size: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_normal((batch_size, self.latent_dim), seed=self._step_seed())

    def train_step(self, real_images: tf.Tensor) -> dict[str, tf.Tensor]:
        noise = self._noise(tf.shape(real_images)[0])
        return self._adversarial_step(noise, real_images, lambda fake_images: fake_images)

    def _adversarial_step(
        self,
        generator_inputs: Any,
        real_inputs: Any,
        discriminator_inputs: Callable[[tf.Tensor], Any],
    ) -> dict[str, tf.Tensor]:
        """One simultaneous update of both networks: the generator makes images from
        `generator_inputs`, the discriminator judges `real_inputs` and
        `discriminator_inputs(fake_images)` (a subclass adds its condition there)."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        real_inputs = self._augmented(real_inputs, offset=0)
        # One forward pass feeds both updates (simultaneous gradient steps): on CPU the
        # generator's forward pass is the dearest part of a step, so it is not repeated.
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake_images = self.generator(generator_inputs, training=True)
            real_logits, real_extra = self._judge(real_inputs)
            fake_inputs = self._augmented(discriminator_inputs(fake_images), offset=1)
            fake_logits, fake_extra = self._judge(fake_inputs)
            # Discriminator: real -> real_label (one-sided smoothing), fake -> 0.
            d_loss = tf.reduce_mean(
                bce(tf.fill(tf.shape(real_logits), self.real_label), real_logits)
            ) + tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits))
            r1 = self._lazy_r1(real_inputs) if self.r1_gamma else tf.constant(0.0)
            # Generator: non-saturating loss, make the discriminator call fakes real.
            g_loss = tf.reduce_mean(bce(tf.ones_like(fake_logits), fake_logits))
            d_extra, g_extra, extra_metrics = self._auxiliary_losses(
                real_inputs, real_extra, fake_inputs, fake_extra
            )
            d_loss_total = d_loss + r1 + d_extra
            # Divided by the replica count because gradients are summed across replicas.
            d_scaled, g_scaled = d_loss_total / replicas, (g_loss + g_extra) / replicas
        d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
        g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        self.d_optimizer.apply_gradients(
            zip(d_grads, self.discriminator.trainable_variables, strict=True)
        )
        self.g_optimizer.apply_gradients(
            zip(g_grads, self.generator.trainable_variables, strict=True)
        )
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": tf.reduce_mean(tf.sigmoid(real_logits)),
            "d_fake": tf.reduce_mean(tf.sigmoid(fake_logits)),
        }
        if self.r1_gamma:
            metrics["r1"] = r1
        return {**metrics, **extra_metrics}

    def _judge(self, inputs: Any) -> tuple[tf.Tensor, Any]:
        """The discriminator's real/fake logits for `inputs`, and its other outputs (None
        for a discriminator with one output)."""
        outputs = self.discriminator(inputs, training=True)
        if isinstance(outputs, list | tuple):
            return outputs[0], outputs[1:]
        return outputs, None

    def _auxiliary_losses(
        self, real_inputs: Any, real_extra: Any, fake_inputs: Any, fake_extra: Any
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """Loss terms beyond the adversarial ones, from the discriminator's other outputs:
        (discriminator's, generator's, metrics). None here; a subclass may add some."""
        return tf.constant(0.0), tf.constant(0.0), {}

    @staticmethod
    def _images_of(inputs: Any) -> tf.Tensor:
        """The image part of the discriminator's inputs (a conditional one adds the class)."""
        return inputs[0] if isinstance(inputs, list | tuple) else inputs

    @staticmethod
    def _with_images(inputs: Any, images: tf.Tensor) -> Any:
        return [images, *inputs[1:]] if isinstance(inputs, list | tuple) else images

    def _augmented(self, inputs: Any, offset: int) -> Any:
        """The discriminator's inputs with DiffAugment applied to the images (if on)."""
        if not self.augment_policy:
            return inputs
        seed = self._step_seed(AUGMENT_SEED_OFFSET + offset)
        images = diff_augment(self._images_of(inputs), self.augment_policy, seed)
        return self._with_images(inputs, images)

    def _lazy_r1(self, real_inputs: Any) -> tf.Tensor:
        """gamma/2 * E||grad_x D(x)||^2 on the real images, every `r1_every` steps and
        scaled by `r1_every` (lazy regularisation, StyleGAN2), else 0."""

        def penalty() -> tf.Tensor:
            images = self._images_of(real_inputs)
            with tf.GradientTape() as tape:
                tape.watch(images)
                logits, _ = self._judge(self._with_images(real_inputs, images))
                total = tf.reduce_sum(logits)
            grads = tape.gradient(total, images)
            squared = tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))
            return 0.5 * self.r1_gamma * self.r1_every * squared

        due = tf.equal(tf.math.floormod(self.d_optimizer.iterations, self.r1_every), 0)
        return tf.cond(due, penalty, lambda: tf.constant(0.0))

    def prepare_served(self, bn_statistics: BatchNormStatistics = "recompute") -> str:
        """Ready the EMA generator for sampling or export; returns what was done.

        During training the EMA copy carries the live generator's BatchNorm statistics
        (copied each step), which belong to other weights. "recompute" measures them on the
        EMA generator itself (training/batchnorm.py); "copied" leaves them as they are (to
        measure what the recomputation buys).
        """
        if bn_statistics == "copied":
            return "BatchNorm statistics copied from the live generator"
        latents = default_latents(self.latent_dim)
        recompute_batchnorm_statistics(self.ema_generator, self.served_inputs(latents))
        return (
            f"BatchNorm statistics recomputed on the EMA generator over {len(latents)} "
            f"standard normal latents (seed {DEFAULT_SEED}){self._statistics_note}"
        )

    _statistics_note = ""

    def served_inputs(self, latents: np.ndarray, seeds: Any = None) -> Any:
        """What the served network takes for these latents (of these seeds): the latents."""
        return latents

    def after_step(self) -> None:
        """Cross-replica EMA update: trainable weights averaged, BatchNorm statistics copied
        (they are recomputed for the EMA weights before sampling; see `prepare_served`)."""
        decay = self.ema_decay
        trainable = {id(v) for v in self.generator.trainable_variables}
        for ema, live in zip(self.ema_generator.weights, self.generator.weights, strict=True):
            if id(live) in trainable:
                ema.assign(decay * ema + (1.0 - decay) * live)
            else:
                ema.assign(live)

    def checkpoint_objects(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "ema_generator": self.ema_generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
        }
