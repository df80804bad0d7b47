"""Differentiable augmentation (DiffAugment; Zhao et al. 2020) for a GAN's discriminator.

Both the real and the generated images are augmented, with the same policy, before the
discriminator sees them; the generator's gradient flows through the augmentation, so the
generator learns the un-augmented distribution while the discriminator, shown more varied
images, overfits a small training set (MNIST's 4,000 digits) less.

Policies (comma-separated): `translation` shifts each image by up to 1/8 of its size,
filling with the background (-1); `cutout` blanks a random square half the image's side
(set to 0, as in the paper's code). The random draws are stateless, keyed on a seed the
caller derives from the training step, so a resumed run draws the same as an unbroken one.
"""

from __future__ import annotations

import tensorflow as tf

POLICIES = ("translation", "cutout")
BACKGROUND = -1.0  # images are in [-1, 1]: -1 is the black background


def parse_policy(policy: str) -> tuple[str, ...]:
    """The policy's parts, checked: 'translation,cutout' -> ('translation', 'cutout')."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in parts if p not in POLICIES]
    if unknown or not parts:
        raise ValueError(
            f"unknown DiffAugment policy {policy!r}: use a comma-separated list of "
            f"{', '.join(POLICIES)}"
        )
    return parts


def diff_augment(images: tf.Tensor, policy: tuple[str, ...], seed: tf.Tensor) -> tf.Tensor:
    """`images` (N, H, W, C) augmented by each part of `policy` in turn."""
    for i, part in enumerate(policy):
        part_seed = seed + tf.constant([0, 1000 * (i + 1)], dtype=seed.dtype)
        images = (
            translation(images, part_seed) if part == "translation" else cutout(images, part_seed)
        )
    return images


def translation(images: tf.Tensor, seed: tf.Tensor, ratio: float = 0.125) -> tf.Tensor:
    """Shift each image by up to `ratio` of its size in x and y (whole pixels)."""
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    shift = int(height * ratio + 0.5)
    offsets = tf.random.stateless_uniform(
        (2, batch, 1, 1), seed=seed, minval=-shift, maxval=shift + 1, dtype=tf.int32
    )
    padded = tf.pad(
        images, [[0, 0], [shift, shift], [shift, shift], [0, 0]], constant_values=BACKGROUND
    )
    # Row (then column) indices into the padded image, per image.
    rows = tf.range(height)[None, :, None] + shift + offsets[0]  # (N, H, 1)
    cols = tf.range(width)[None, None, :] + shift + offsets[1]  # (N, 1, W)
    rows = tf.broadcast_to(rows, (batch, height, width))
    cols = tf.broadcast_to(cols, (batch, height, width))
    return tf.gather_nd(padded, tf.stack([rows, cols], axis=-1), batch_dims=1)


def cutout(images: tf.Tensor, seed: tf.Tensor, ratio: float = 0.5) -> tf.Tensor:
    """Set a random rectangle, `ratio` of the image's height and width, to 0, one per image."""
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    # The rectangle's centre, anywhere in the image (it may stick out of the image).
    centre_y = tf.random.stateless_uniform(
        (batch, 1, 1), seed=seed, minval=0, maxval=height, dtype=tf.int32
    )
    centre_x = tf.random.stateless_uniform(
        (batch, 1, 1), seed=seed + tf.constant([0, 1], seed.dtype), maxval=width, dtype=tf.int32
    )
    rows = tf.range(height)[None, :, None] - (centre_y - size_y // 2)
    cols = tf.range(width)[None, None, :] - (centre_x - size_x // 2)
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)  # (N, H, W)
    return images * tf.cast(~inside, images.dtype)[..., None]
