"""The image classifier's model: the CNN on every rank, and the served pyfunc (uint8 images in)."""

from __future__ import annotations

import numpy as np

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example
from pipelines.kinds.classifier.task import ClassifierTask


class CnnTask(ClassifierTask):
    def build_model(self, config, transform):
        from models.cnn import build_cnn

        return build_cnn(
            transform.shape,
            len(transform.class_names),
            transform.mean,
            transform.std,
            filters=config.model.filters,
            dense_units=config.model.dense_units,
            dropout=config.model.dropout,
        )

    def augmentation(self, ctx):
        from models.augment import build_augmentation

        augment = ctx.config.train.augment
        return build_augmentation(
            augment.flip, augment.crop, augment.rotation, augment.contrast, seed=ctx.config.train.seed
        )


class ImageClassifier(KerasClassifier):
    """Takes uint8 images of shape (n, size, size, 3)."""

    def features(self, model_input):
        return self.transform.to_images(np.asarray(model_input, dtype=np.uint8))


def served_model(transform, model_config):
    """The pyfunc, an input example and an output example for its signature."""
    example = np.zeros((2, *transform.feature_shape), dtype=np.uint8)
    return ImageClassifier(), example, probabilities_example(transform, len(example))
