"""Small functional Keras builders for the served networks and their training partners.

Functional models (not `Sequential`) because they export cleanly with tf2onnx.
"""

from __future__ import annotations

import keras
from keras import layers

IMAGE_SHAPE = (28, 28, 1)


def build_generator(latent_dim: int, width: int = 128, name: str = "generator") -> keras.Model:
    """DCGAN generator: latent (N, latent_dim) -> image (N, 28, 28, 1) in [-1, 1] (tanh).

    Channels halve at each upsampling (width, width/2, width/4): most of a DCGAN's compute
    sits in the last, full-resolution layer, and on CPU that is what bounds training.
    BatchNorm is synchronised across replicas: under a distribution strategy it normalises
    over the global batch (as one replica would) and every replica keeps the same moving
    statistics; with one replica it is plain BatchNorm.
    """
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(7 * 7 * width, use_bias=False)(latent)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((7, 7, width))(x)
    x = layers.Conv2DTranspose(width // 2, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(width // 4, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.ReLU()(x)
    image = layers.Conv2D(IMAGE_SHAPE[-1], 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(latent, image, name=name)


def _maybe_normalised(layer: layers.Layer, spectral_norm: bool) -> layers.Layer:
    """The layer, wrapped in spectral normalisation (Miyato et al. 2018) when asked."""
    return layers.SpectralNormalization(layer) if spectral_norm else layer


def _discriminator_features(
    image: keras.KerasTensor, width: int, depth: int, dropout: float, spectral_norm: bool
) -> keras.KerasTensor:
    """`depth` stride-2 convolutions (channels doubling from `width`), flattened."""
    x = image
    for i in range(depth):
        conv = layers.Conv2D(width * 2**i, 4, strides=2, padding="same")
        x = _maybe_normalised(conv, spectral_norm)(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    return layers.Dropout(dropout)(x) if dropout else x


def build_discriminator(
    width: int = 64, dropout: float = 0.3, depth: int = 2, spectral_norm: bool = False
) -> keras.Model:
    """DCGAN discriminator: image in [-1, 1] -> one real/fake logit.

    The defaults are the shipped recipe (2 convolutions, dropout); `depth`, `width` and
    `spectral_norm` are the recipe comparison's knobs (training/recipes.py).
    """
    image = keras.Input(IMAGE_SHAPE, name="image")
    h = _discriminator_features(image, width, depth, dropout, spectral_norm)
    logit = _maybe_normalised(layers.Dense(1, name="logit"), spectral_norm)(h)
    return keras.Model(image, logit, name="discriminator")


def build_encoder(latent_dim: int, name: str = "encoder") -> keras.Model:
    """VAE encoder: image in [0, 1] -> (z_mean, z_log_var)."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(image)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(image, [z_mean, z_log_var], name=name)


def build_decoder(latent_dim: int, name: str = "decoder") -> keras.Model:
    """VAE decoder: latent -> image in [0, 1] (sigmoid); this is what the service serves.

    The sigmoid is its own last layer (`image`) after the pre-sigmoid `logits` layer, so
    training can take the loss on the logits (`decoder_logits`) while the served and
    exported graph keeps the sigmoid.
    """
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(256, activation="relu")(latent)
    x = layers.Dense(7 * 7 * 64, activation="relu")(x)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    logits = layers.Conv2D(IMAGE_SHAPE[-1], 3, padding="same", name="logits")(x)
    image = layers.Activation("sigmoid", name="image")(logits)
    return keras.Model(latent, image, name=name)


def decoder_logits(decoder: keras.Model) -> keras.Model:
    """The decoder up to its pre-sigmoid logits, sharing its layers and weights."""
    return keras.Model(decoder.input, decoder.get_layer("logits").output, name="decoder_logits")


def _class_shift(class_weights: keras.KerasTensor, channels: int, name: str) -> keras.KerasTensor:
    """A per-class, per-channel shift (linear in the class weights, so mixtures blend)."""
    shift = layers.Dense(channels, use_bias=False, kernel_initializer="zeros", name=name)(
        class_weights
    )
    return layers.Reshape((1, 1, channels))(shift)


def build_conditional_generator(
    latent_dim: int, num_classes: int, width: int = 128, name: str = "generator"
) -> keras.Model:
    """Class-conditional DCGAN generator: (latent (N, latent_dim), class weights
    (N, num_classes) float32) -> image (N, 28, 28, 1) in [-1, 1].

    The class weights (one-hot for one class, a mixture to blend) enter linearly: a learnt
    class embedding joins the latent at the input, and after every BatchNorm a learnt
    per-class shift is added to the channels (the shift half of conditional BatchNorm).
    Everything is linear in the weights up to the first ReLU, so a mixture of two one-hot
    vectors is a point between the two classes.
    """
    latent = keras.Input((latent_dim,), name="latent")
    class_weights = keras.Input((num_classes,), name="class_weights")
    embedding = layers.Dense(latent_dim, use_bias=False, name="class_embedding")(class_weights)
    x = layers.Concatenate()([latent, embedding])
    x = layers.Dense(7 * 7 * width, use_bias=False)(x)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.Reshape((7, 7, width))(x)
    x = layers.Add()([x, _class_shift(class_weights, width, "class_shift_7")])
    x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(width // 2, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.Add()([x, _class_shift(class_weights, width // 2, "class_shift_14")])
    x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(width // 4, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(synchronized=True)(x)
    x = layers.Add()([x, _class_shift(class_weights, width // 4, "class_shift_28")])
    x = layers.ReLU()(x)
    image = layers.Conv2D(IMAGE_SHAPE[-1], 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model([latent, class_weights], image, name=name)


def build_projection_discriminator(
    num_classes: int,
    width: int = 64,
    dropout: float = 0.3,
    depth: int = 2,
    spectral_norm: bool = False,
    class_head: bool = False,
) -> keras.Model:
    """DCGAN discriminator with a projection head (Miyato & Koyama 2018):
    logit = w . h + <embed(class weights), h> for the image features h. `class_head` adds a
    second output, class logits [N, num_classes] from the same features (an auxiliary
    classifier, Odena et al. 2017)."""
    image = keras.Input(IMAGE_SHAPE, name="image")
    class_weights = keras.Input((num_classes,), name="class_weights")
    h = _discriminator_features(image, width, depth, dropout, spectral_norm)
    unconditional = _maybe_normalised(layers.Dense(1, name="logit"), spectral_norm)(h)
    embed = layers.Dense(h.shape[-1], use_bias=False, name="class_projection")
    embedding = _maybe_normalised(embed, spectral_norm)(class_weights)
    projection = layers.Dot(axes=1)([embedding, h])
    logit = layers.Add(name="projected_logit")([unconditional, projection])
    if not class_head:
        return keras.Model([image, class_weights], logit, name="discriminator")
    classifier = layers.Dense(num_classes, name="class_logits")
    class_logits = _maybe_normalised(classifier, spectral_norm)(h)
    return keras.Model([image, class_weights], [logit, class_logits], name="discriminator")
