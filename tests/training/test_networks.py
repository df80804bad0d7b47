"""Train steps, loss terms and the EMA generator, on tiny networks (TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train

tf = pytest.importorskip("tensorflow")


def _changed(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    return all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_gan_train_step_updates_both_networks_and_keeps_losses_finite() -> None:
    from training.gan import GAN

    gan = GAN(latent_dim=8, generator_width=16, discriminator_width=8, seed=1)
    real = tf.random.uniform((16, 28, 28, 1), -1.0, 1.0, seed=0)
    g_before = [w.numpy() for w in gan.generator.trainable_weights]
    d_before = [w.numpy() for w in gan.discriminator.trainable_weights]
    out = tf.function(gan.train_step)(real)
    assert all(np.isfinite(float(v)) for v in out.values())
    assert set(out) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert _changed(g_before, [w.numpy() for w in gan.generator.trainable_weights])
    assert _changed(d_before, [w.numpy() for w in gan.discriminator.trainable_weights])


def test_ema_generator_moves_a_fraction_of_the_way_towards_the_live_weights() -> None:
    from training.gan import GAN

    gan = GAN(latent_dim=8, generator_width=16, discriminator_width=8, ema_decay=0.9)
    ema_before = [w.numpy() for w in gan.ema_generator.trainable_weights]
    for w in gan.generator.trainable_weights:
        w.assign(w + 1.0)
    gan.after_step()
    for before, ema in zip(ema_before, gan.ema_generator.trainable_weights, strict=True):
        np.testing.assert_allclose(ema.numpy(), before + 0.1, rtol=1e-5, atol=1e-5)


def test_gan_noise_is_reproducible_for_a_step_and_differs_between_steps() -> None:
    from training.gan import GAN

    gan = GAN(latent_dim=8, generator_width=16, discriminator_width=8, seed=3)
    first, again = gan._noise(4).numpy(), gan._noise(4).numpy()
    np.testing.assert_array_equal(first, again)
    gan.g_optimizer.iterations.assign_add(1)
    assert not np.array_equal(first, gan._noise(4).numpy())


def test_vae_kl_is_zero_at_the_prior_and_matches_the_closed_form() -> None:
    from training.vae import vae_loss_terms

    images = tf.zeros((2, 28, 28, 1))
    recon = tf.fill((2, 28, 28, 1), 0.5)
    _, kl_prior = vae_loss_terms(images, recon, tf.zeros((2, 4)), tf.zeros((2, 4)))
    assert float(kl_prior) == pytest.approx(0.0, abs=1e-6)
    mean, log_var = tf.fill((2, 4), 1.0), tf.fill((2, 4), float(np.log(2.0)))
    _, kl = vae_loss_terms(images, recon, mean, log_var)
    # KL(N(1, 2) || N(0, 1)) per dimension = 0.5 * (2 + 1 - 1 - ln 2).
    assert float(kl) == pytest.approx(4 * 0.5 * (2 + 1 - 1 - np.log(2.0)), rel=1e-5)


def test_vae_reconstruction_term_is_bernoulli_nll() -> None:
    from training.vae import vae_loss_terms

    images = tf.ones((1, 28, 28, 1))
    nll_good, _ = vae_loss_terms(
        images, tf.fill((1, 28, 28, 1), 0.99), tf.zeros((1, 2)), tf.zeros((1, 2))
    )
    nll_half, _ = vae_loss_terms(
        images, tf.fill((1, 28, 28, 1), 0.5), tf.zeros((1, 2)), tf.zeros((1, 2))
    )
    assert float(nll_half) == pytest.approx(784 * np.log(2.0), rel=1e-5)
    assert float(nll_good) == pytest.approx(-784 * np.log(0.99), rel=1e-4)


def test_vae_train_step_lowers_the_loss_on_a_fixed_batch() -> None:
    from training.vae import VAE

    vae = VAE(latent_dim=4, learning_rate=3e-3)
    images = tf.cast(tf.random.uniform((32, 28, 28, 1), seed=1) > 0.7, tf.float32)
    step = tf.function(vae.train_step)
    first = float(step(images)["loss"])
    for _ in range(15):
        last = float(step(images)["loss"])
    assert np.isfinite(last)
    assert last < first
