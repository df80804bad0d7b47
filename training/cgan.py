"""The class-conditional GAN: the GAN recipe (non-saturating loss, one-sided label smoothing,
EMA generator with recomputed BatchNorm statistics) with the class as a second input.

Generator: latent and float32 class weights [N, num_classes] (one-hot for a class; a
mixture blends); see `build_conditional_generator`. Discriminator: a projection
discriminator (Miyato & Koyama 2018). Fake images are drawn for classes picked uniformly
at random (stateless, keyed on the step like the noise), so every class gets the same
share of the generator's updates.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from service.runtime.card import class_for_seed, class_weights
from training.gan import GAN
from training.networks import build_conditional_generator, build_projection_discriminator


class CGAN(GAN):
    """GAN whose networks take the class weights as a second input."""

    kind = "cgan"

    def __init__(self, latent_dim: int = 64, *, num_classes: int = 10, **kwargs: Any) -> None:
        self._num_classes = num_classes
        super().__init__(latent_dim, **kwargs)
        self.num_classes = num_classes
        self.hyperparameters = {
            **self.hyperparameters,
            "num_classes": num_classes,
            "conditioning": "class embedding at the input and a per-class channel shift "
            "after every BatchNorm (generator); projection discriminator",
        }

    _statistics_note = " with classes i % num_classes (uniform)"

    def _build_networks(
        self, latent_dim: int, generator_width: int, discriminator_width: int
    ) -> tuple[keras.Model, keras.Model, keras.Model]:
        classes = self._num_classes
        return (
            build_conditional_generator(latent_dim, classes, generator_width),
            build_conditional_generator(latent_dim, classes, generator_width, name="ema_generator"),
            build_projection_discriminator(classes, discriminator_width),
        )

    def served_inputs(self, latents: np.ndarray, seeds: Any = None) -> Any:
        """[latents, class weights]: seed s (or row i when no seeds are given) means class
        s % num_classes, the service's seed contract."""
        keys = np.arange(len(latents)) if seeds is None else np.asarray(list(seeds))
        classes = np.array([class_for_seed(int(s), self.num_classes) for s in keys])
        return [latents, class_weights(classes, self.num_classes)]

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        real_images, real_classes = batch
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch_size = tf.shape(real_images)[0]
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        noise = self._noise(batch_size)
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        class_seed = tf.stack(
            [
                tf.cast(self.g_optimizer.iterations, tf.int32) + self.noise_seed + 7919,
                tf.cast(replica_id, tf.int32),
            ]
        )
        fake_labels = tf.random.stateless_uniform(
            (batch_size,), seed=class_seed, maxval=self.num_classes, dtype=tf.int32
        )
        fake_classes = tf.one_hot(fake_labels, self.num_classes, dtype=tf.float32)
        with tf.GradientTape() as d_tape, tf.GradientTape() as g_tape:
            fake_images = self.generator([noise, fake_classes], training=True)
            real_logits = self.discriminator([real_images, real_classes], training=True)
            fake_logits = self.discriminator([fake_images, fake_classes], training=True)
            d_loss = tf.reduce_mean(
                bce(tf.fill(tf.shape(real_logits), self.real_label), real_logits)
            ) + tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits))
            g_loss = tf.reduce_mean(bce(tf.ones_like(fake_logits), fake_logits))
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
