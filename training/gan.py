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

from training.batchnorm import DEFAULT_SEED, default_latents, recompute_batchnorm_statistics
from training.networks import build_discriminator, build_generator

BatchNormStatistics = Literal["recompute", "copied"]


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
        learning_rate: float = 2e-4,
        beta_1: float = 0.5,
        real_label: float = 0.9,
        ema_decay: float = 0.999,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.real_label = real_label
        self.ema_decay = ema_decay
        self.noise_seed = seed
        self.hyperparameters = {
            "latent_dim": latent_dim,
            "generator_width": generator_width,
            "discriminator_width": discriminator_width,
            "learning_rate": learning_rate,
            "beta_1": beta_1,
            "real_label": real_label,
            "ema_decay": ema_decay,
            "loss": "non-saturating, one-sided label smoothing",
        }
        self.generator, self.ema_generator, self.discriminator = self._build_networks(
            latent_dim, generator_width, discriminator_width
        )
        self.ema_generator.set_weights(self.generator.get_weights())
        self.g_optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
        self.d_optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def _build_networks(
        self, latent_dim: int, generator_width: int, discriminator_width: int
    ) -> tuple[keras.Model, keras.Model, keras.Model]:
        """(generator, its EMA copy, discriminator); a subclass may build other ones."""
        return (
            build_generator(latent_dim, generator_width),
            build_generator(latent_dim, generator_width, name="ema_generator"),
            build_discriminator(discriminator_width),
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
        # One forward pass feeds both updates (simultaneous gradient steps): on CPU the
        # generator's forward pass is the dearest part of a step, so it is not repeated.
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake_images = self.generator(generator_inputs, training=True)
            real_logits = self.discriminator(real_inputs, training=True)
            fake_logits = self.discriminator(discriminator_inputs(fake_images), training=True)
            # Discriminator: real -> real_label (one-sided smoothing), fake -> 0.
            d_loss = tf.reduce_mean(
                bce(tf.fill(tf.shape(real_logits), self.real_label), real_logits)
            ) + tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits))
            # Generator: non-saturating loss, make the discriminator call fakes real.
            g_loss = tf.reduce_mean(bce(tf.ones_like(fake_logits), fake_logits))
            # Divided by the replica count because gradients are summed across replicas.
            d_scaled, g_scaled = d_loss / replicas, g_loss / replicas
        d_grads = d_tape.gradient(d_scaled, self.discriminator.trainable_variables)
        g_grads = g_tape.gradient(g_scaled, self.generator.trainable_variables)
        self.d_optimizer.apply_gradients(
            zip(d_grads, self.discriminator.trainable_variables, strict=True)
        )
        self.g_optimizer.apply_gradients(
            zip(g_grads, self.generator.trainable_variables, strict=True)
        )
        return {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": tf.reduce_mean(tf.sigmoid(real_logits)),
            "d_fake": tf.reduce_mean(tf.sigmoid(fake_logits)),
        }

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
