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
    recon = tf.zeros((2, 28, 28, 1))  # logits of p = 0.5
    _, kl_prior = vae_loss_terms(images, recon, tf.zeros((2, 4)), tf.zeros((2, 4)))
    assert float(kl_prior) == pytest.approx(0.0, abs=1e-6)
    mean, log_var = tf.fill((2, 4), 1.0), tf.fill((2, 4), float(np.log(2.0)))
    _, kl = vae_loss_terms(images, recon, mean, log_var)
    # KL(N(1, 2) || N(0, 1)) per dimension = 0.5 * (2 + 1 - 1 - ln 2).
    assert float(kl) == pytest.approx(4 * 0.5 * (2 + 1 - 1 - np.log(2.0)), rel=1e-5)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def test_vae_reconstruction_term_is_bernoulli_nll_on_logits() -> None:
    from training.vae import vae_loss_terms

    images = tf.ones((1, 28, 28, 1))
    nll_good, _ = vae_loss_terms(
        images, tf.fill((1, 28, 28, 1), _logit(0.99)), tf.zeros((1, 2)), tf.zeros((1, 2))
    )
    nll_half, _ = vae_loss_terms(
        images, tf.zeros((1, 28, 28, 1)), tf.zeros((1, 2)), tf.zeros((1, 2))
    )
    assert float(nll_half) == pytest.approx(784 * np.log(2.0), rel=1e-5)
    assert float(nll_good) == pytest.approx(-784 * np.log(0.99), rel=1e-4)
    # Grey pixels: -[x log p + (1 - x) log(1 - p)], the same likelihood as before.
    grey = tf.fill((1, 28, 28, 1), 0.3)
    nll_grey, _ = vae_loss_terms(
        grey, tf.fill((1, 28, 28, 1), _logit(0.8)), tf.zeros((1, 2)), tf.zeros((1, 2))
    )
    expected = -784 * (0.3 * np.log(0.8) + 0.7 * np.log(0.2))
    assert float(nll_grey) == pytest.approx(expected, rel=1e-5)


def test_vae_loss_stays_exact_and_keeps_its_gradient_for_saturated_logits() -> None:
    from training.vae import vae_loss_terms

    images = tf.ones((1, 28, 28, 1))
    logits = tf.Variable(tf.fill((1, 28, 28, 1), -40.0))  # sigmoid(-40) is 0 in float32
    with tf.GradientTape() as tape:
        nll, _ = vae_loss_terms(images, logits, tf.zeros((1, 2)), tf.zeros((1, 2)))
    grad = tape.gradient(nll, logits)
    # A clipped probability would give 784 * -log(1e-7) = 12637 and no gradient.
    assert float(nll) == pytest.approx(784 * 40.0, rel=1e-4)
    np.testing.assert_allclose(grad.numpy(), -1.0, atol=1e-6)


def test_vae_trains_on_logits_and_serves_the_sigmoid_of_them() -> None:
    from training.vae import VAE

    vae = VAE(latent_dim=4)
    z = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    logits = vae.decoder_logits(z).numpy()
    served = vae.served(z).numpy()
    np.testing.assert_allclose(served, 1.0 / (1.0 + np.exp(-logits)), atol=1e-6)
    assert vae.served.layers[-1].name == "image"
    # One set of weights: the logits model is the served decoder minus its sigmoid.
    assert {id(v) for v in vae.decoder_logits.weights} == {id(v) for v in vae.decoder.weights}


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
