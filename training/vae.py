"""The VAE: convolutional encoder and decoder trained on the ELBO; the decoder is served.

The reconstruction loss is computed on the decoder's pre-sigmoid logits; the sigmoid lives
only in the served (and exported) decoder.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from training.networks import build_decoder, build_encoder, decoder_logits


def vae_loss_terms(
    images: tf.Tensor, logits: tf.Tensor, z_mean: tf.Tensor, z_log_var: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example mean of (reconstruction NLL in nats, KL(q(z|x) || N(0, I))).

    The Bernoulli likelihood of the [0, 1] pixel intensities is taken on the decoder's
    logits with `sigmoid_cross_entropy_with_logits`: exact and finite for any logit, where
    log(sigmoid(x)) on a clipped probability saturates and loses the gradient.
    """
    nll = tf.reduce_sum(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits), axis=[1, 2, 3]
    )
    kl = -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=1)
    return tf.reduce_mean(nll), tf.reduce_mean(kl)


class VAE(keras.Model):
    """Encoder q(z|x), decoder p(x|z), standard normal prior: the seed contract's latent."""

    kind = "vae"
    output_range = (0.0, 1.0)

    def __init__(
        self,
        latent_dim: int = 16,
        *,
        learning_rate: float = 1e-3,
        beta: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.beta = beta
        self.noise_seed = seed
        self.hyperparameters = {
            "latent_dim": latent_dim,
            "learning_rate": learning_rate,
            "beta": beta,
            "likelihood": "Bernoulli, on the decoder's logits",
        }
        self.encoder = build_encoder(latent_dim)
        self.decoder = build_decoder(latent_dim)  # served: ends in the sigmoid
        self.decoder_logits = decoder_logits(self.decoder)  # trained on: same weights
        self.optimizer_ = keras.optimizers.Adam(learning_rate)
        self.optimizer_.build(self.encoder.trainable_variables + self.decoder.trainable_variables)

    @property
    def served(self) -> keras.Model:
        return self.decoder

    def train_step(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        seed = tf.stack(
            [
                tf.cast(self.optimizer_.iterations, tf.int32) + self.noise_seed,
                tf.cast(replica_id, tf.int32),
            ]
        )
        variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(images, training=True)
            # Reparameterisation: z = mu + sigma * eps keeps the sample differentiable.
            eps = tf.random.stateless_normal(tf.shape(z_mean), seed=seed)
            z = z_mean + tf.exp(0.5 * z_log_var) * eps
            logits = self.decoder_logits(z, training=True)
            nll, kl = vae_loss_terms(images, logits, z_mean, z_log_var)
            loss = nll + self.beta * kl
            scaled = loss / replicas  # gradients are summed across replicas
        grads = tape.gradient(scaled, variables)
        self.optimizer_.apply_gradients(zip(grads, variables, strict=True))
        return {"loss": loss, "reconstruction": nll, "kl": kl}

    def prepare_served(self, bn_statistics: str = "recompute") -> str:
        """Nothing to prepare: the decoder has no BatchNorm layers and no weight average."""
        return "no BatchNorm layers"

    def after_step(self) -> None:
        """Nothing to do after a VAE step."""

    def checkpoint_objects(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "decoder": self.decoder, "optimizer": self.optimizer_}
