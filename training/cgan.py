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

CLASS_SEED_OFFSET = 7919  # the fake classes' random stream, apart from the noise's


class CGAN(GAN):
    """GAN whose networks take the class weights as a second input."""

    kind = "cgan"

    def __init__(
        self,
        latent_dim: int = 64,
        *,
        num_classes: int = 10,
        class_loss_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """`class_loss_weight` > 0 adds an auxiliary classifier to the discriminator
        (Odena et al. 2017), trained on real images only; the generator is pushed, with
        this weight, to make images it classifies as their class."""
        if class_loss_weight < 0:
            raise ValueError(f"class_loss_weight must be >= 0, not {class_loss_weight}")
        self._num_classes = num_classes
        self.class_loss_weight = float(class_loss_weight)
        super().__init__(latent_dim, **kwargs)
        self.num_classes = num_classes
        self.hyperparameters = {
            **self.hyperparameters,
            "num_classes": num_classes,
            "conditioning": "class embedding at the input and a per-class channel shift "
            "after every BatchNorm (generator); projection discriminator"
            + (", auxiliary classifier (real images only)" if self.class_loss_weight else ""),
            "class_loss_weight": self.class_loss_weight,
        }

    _statistics_note = " with classes i % num_classes (uniform)"

    def _build_networks(
        self, latent_dim: int, generator_width: int, discriminator: dict[str, Any]
    ) -> tuple[keras.Model, keras.Model, keras.Model]:
        classes = self._num_classes
        return (
            build_conditional_generator(latent_dim, classes, generator_width),
            build_conditional_generator(latent_dim, classes, generator_width, name="ema_generator"),
            build_projection_discriminator(
                classes, **discriminator, class_head=bool(self.class_loss_weight)
            ),
        )

    def _auxiliary_losses(
        self, real_inputs: Any, real_extra: Any, fake_inputs: Any, fake_extra: Any
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """The auxiliary classifier's cross-entropies against the class weights (soft
        targets, so a blend is a valid label): on real images for the discriminator, on
        fakes for the generator. The classifier never learns from fakes, so it cannot
        reward the generator for classes that are merely easy to fake."""
        if not self.class_loss_weight:
            return super()._auxiliary_losses(real_inputs, real_extra, fake_inputs, fake_extra)
        cross_entropy = tf.nn.softmax_cross_entropy_with_logits
        d_class = tf.reduce_mean(cross_entropy(real_inputs[1], real_extra[0]))
        g_class = tf.reduce_mean(cross_entropy(fake_inputs[1], fake_extra[0]))
        weight = self.class_loss_weight
        return weight * d_class, weight * g_class, {"d_class": d_class, "g_class": g_class}

    def served_inputs(self, latents: np.ndarray, seeds: Any = None) -> Any:
        """[latents, class weights]: seed s (or row i when no seeds are given) means class
        s % num_classes, the service's seed contract."""
        keys = np.arange(len(latents)) if seeds is None else np.asarray(list(seeds))
        classes = np.array([class_for_seed(int(s), self.num_classes) for s in keys])
        return [latents, class_weights(classes, self.num_classes)]

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        real_images, real_classes = batch
        batch_size = tf.shape(real_images)[0]
        noise = self._noise(batch_size)
        fake_labels = tf.random.stateless_uniform(
            (batch_size,),
            seed=self._step_seed(CLASS_SEED_OFFSET),
            maxval=self.num_classes,
            dtype=tf.int32,
        )
        fake_classes = tf.one_hot(fake_labels, self.num_classes, dtype=tf.float32)
        return self._adversarial_step(
            [noise, fake_classes],
            [real_images, real_classes],
            lambda fake_images: [fake_images, fake_classes],
        )
