"""DCGAN-style generator and discriminator, sized from the image size.

The generator maps a latent vector to an RGB image in [-1, 1]: dense -> reshape to a small map ->
transposed convolutions that double the size each -> tanh. The discriminator maps an image in
[-1, 1] to one logit: strided convolutions with LeakyReLU and dropout.
"""

from __future__ import annotations

from collections.abc import Sequence


def upsampling_start(image_size: int, upsamplings: int) -> int:
    """The side of the generator's first feature map; ``image_size`` must divide by 2**upsamplings."""
    if image_size % (2**upsamplings):
        raise ValueError(f"image size {image_size} is not divisible by 2**{upsamplings}")
    return image_size // 2**upsamplings


def build_generator(latent_dim: int, image_size: int, filters: Sequence[int] = (128, 64, 32)):
    """Latent vectors (n, latent_dim) -> images (n, image_size, image_size, 3) in [-1, 1]."""
    import keras
    from keras import layers

    start = upsampling_start(image_size, len(filters))
    inputs = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(start * start * filters[0], use_bias=False, name="project")(inputs)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((start, start, filters[0]))(x)
    for i, count in enumerate(filters[1:], start=1):
        x = layers.Conv2DTranspose(count, 4, strides=2, padding="same", use_bias=False, name=f"up{i}")(x)
        x = layers.BatchNormalization(name=f"up{i}_bn")(x)
        x = layers.LeakyReLU(0.2)(x)
    outputs = layers.Conv2DTranspose(
        3, 4, strides=2, padding="same", activation="tanh", dtype="float32", name="image"
    )(x)
    return keras.Model(inputs, outputs, name="generator")


def build_discriminator(image_size: int, filters: Sequence[int] = (32, 64, 128), dropout: float = 0.3):
    """Images (n, image_size, image_size, 3) in [-1, 1] -> one logit each (real > 0)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    for i, count in enumerate(filters, start=1):
        x = layers.Conv2D(count, 4, strides=2, padding="same", name=f"down{i}")(x)
        x = layers.LeakyReLU(0.2)(x)
        x = layers.Dropout(dropout)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs, outputs, name="discriminator")


def build_feature_classifier(image_size: int, num_classes: int, feature_units: int = 64):
    """A small classifier of images in [-1, 1]; its ``features`` layer is the space in which the
    GAN's quality (a Fréchet distance) is measured."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(feature_units, activation="relu", name="features")(x)
    outputs = layers.Dense(max(num_classes, 2), activation="softmax", name="probabilities")(features)
    return keras.Model(inputs, outputs, name="feature_classifier")
