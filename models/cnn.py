"""The CNN image classifier: Conv-Pool x3 -> Dense -> softmax, normalizing raw uint8 pixels itself."""

from __future__ import annotations

from collections.abc import Sequence


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    filters: Sequence[int] = (32, 64, 128),
    dense_units: int = 128,
    dropout: float = 0.2,
):
    """Build the classifier. Inputs are raw uint8 pixels; the fitted per-channel ``mean``/``std``
    live inside the model so that a saved model needs no separate preprocessing.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(inputs)
    for i, count in enumerate(filters):
        x = layers.Conv2D(count, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout)(x)
    # float32 whatever the compute precision: a softmax in bfloat16 or float16 loses the small
    # probabilities, and the loss needs them.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn_classifier")
