"""Image classifiers on a ``keras.applications`` backbone: raw uint8 pixels in, class probabilities
out, the backbone as one nested model named ``backbone`` (whose weights can come from elsewhere).

Each backbone gets its inputs the way its ImageNet weights were trained on them, inside the model:
a weights file from Keras' own ImageNet release then works as it is.
"""

from __future__ import annotations

import warnings

BACKBONE_LAYER = "backbone"
# ImageNet's mean pixel, RGB: what ResNet50's "caffe" preprocessing subtracts (after a flip to BGR).
_IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


def _mobilenet_v3_small(inputs, input_shape):
    import keras

    # It rescales [0, 255] to [-1, 1] itself (include_preprocessing).
    base = keras.applications.MobileNetV3Small(
        input_shape=input_shape, include_top=False, weights=None, pooling="avg", name=BACKBONE_LAYER
    )
    return base, keras.ops.cast(inputs, "float32")


def _resnet50(inputs, input_shape):
    import keras

    base = keras.applications.ResNet50(
        input_shape=input_shape, include_top=False, weights=None, pooling="avg", name=BACKBONE_LAYER
    )
    bgr = keras.ops.flip(keras.ops.cast(inputs, "float32"), axis=-1)
    centred = keras.layers.Normalization(mean=_IMAGENET_MEAN_BGR, variance=(1.0,) * 3, name="imagenet_mean")
    return base, centred(bgr)


BACKBONES = {"mobilenet_v3_small": _mobilenet_v3_small, "resnet50": _resnet50}


def build_backbone_classifier(
    input_shape: tuple[int, int, int],
    num_classes: int,
    backbone: str,
    dropout: float = 0.2,
    frozen_statistics: bool = False,
):
    """``backbone`` (a key of ``BACKBONES``) -> global average pool -> dropout -> softmax.

    With ``frozen_statistics`` the backbone's batch-normalization layers always run in inference
    mode, as Keras recommends when fine-tuning pre-trained weights (their statistics are kept, even
    once the backbone is trainable); from scratch they learn their statistics.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    base, prepared = BACKBONES[backbone](inputs, input_shape)
    if not frozen_statistics:
        # keras.applications' batch norms average their statistics over ~1,000 steps (momentum
        # 0.999): a short training from scratch would serve statistics still near their initial
        # values (validation accuracy at chance after 3 epochs of the digits, measured).
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(prepared, training=False if frozen_statistics else None)
    x = layers.Dropout(dropout)(x)
    # float32 whatever the compute precision (as the seed CNN's output).
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{backbone}_classifier")


def find_backbone(model):
    """The nested ``backbone`` model inside ``model`` (also inside a wrapper, e.g. augmentation), or None."""
    for layer in getattr(model, "layers", []):
        if layer.name == BACKBONE_LAYER:
            return layer
        found = find_backbone(layer)
        if found is not None:
            return found
    return None


def load_backbone_weights(backbone, path: str) -> None:
    """Set ``backbone``'s weights from ``path``: a whole Keras model (``.keras``, e.g. a dlfusion
    model) whose own ``backbone`` is of the same architecture, or a weights file (``.h5``,
    ``.weights.h5``: Keras' ImageNet "notop" release, or ``backbone.save_weights``).

    Raises:
        ValueError: one line, when the file holds no matching backbone.
    """
    import keras

    if path.endswith(".keras"):
        source = find_backbone(keras.models.load_model(path, compile=False))
        if source is None:
            raise ValueError(f"{path} holds no model with a {BACKBONE_LAYER!r} (a seed_cnn model?)")
        shapes = [w.shape for w in source.get_weights()]
        if shapes != [w.shape for w in backbone.get_weights()]:
            raise ValueError(f"the backbone in {path} is another architecture than {backbone.name}")
        backbone.set_weights(source.get_weights())
        return
    try:
        with warnings.catch_warnings():  # a file of another architecture: a warning per layer first
            warnings.simplefilter("ignore")
            backbone.load_weights(path)
    except Exception as err:  # Keras' messages run to many lines: the first says what is wrong
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        problem = f"cannot load {path} into this backbone (another architecture?): {first[:300]}"
        raise ValueError(problem) from err
