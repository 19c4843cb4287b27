"""The perceptron on every rank, and the served pyfunc (uint8 images in, class probabilities out)."""

from __future__ import annotations

import numpy as np

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example
from pipelines.kinds.classifier.task import ClassifierTask


class MlpTask(ClassifierTask):
    def build_model(self, config, transform):
        import keras
        from keras import layers

        inputs = keras.Input(shape=transform.shape, dtype="uint8", name="image")
        x = layers.Normalization(mean=transform.mean, variance=[s * s for s in transform.std])(inputs)
        x = layers.Flatten()(x)
        x = layers.Dense(config.model.hidden_units, activation="relu")(x)
        outputs = layers.Dense(len(transform.class_names), activation="softmax")(x)
        return keras.Model(inputs, outputs, name="mlp_classifier")


class MlpClassifier(KerasClassifier):
    def features(self, model_input):
        return self.transform.to_images(np.asarray(model_input, dtype=np.uint8))


def served_model(transform, model_config):
    example = np.zeros((2, *transform.feature_shape), dtype=np.uint8)
    return MlpClassifier(), example, probabilities_example(transform, len(example))
