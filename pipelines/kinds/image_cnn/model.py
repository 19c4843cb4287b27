"""The image classifier's served pyfunc (uint8 images in); the training task is ``task``."""

from __future__ import annotations

import numpy as np

from pipelines.kinds.classifier.serving import KerasClassifier, probabilities_example


class ImageClassifier(KerasClassifier):
    """Takes uint8 images of shape (n, size, size, 3)."""

    def features(self, model_input):
        return self.transform.to_images(np.asarray(model_input, dtype=np.uint8))


def served_model(transform, model_config):
    """The pyfunc, an input example and an output example for its signature."""
    example = np.zeros((2, *transform.feature_shape), dtype=np.uint8)
    return ImageClassifier(), example, probabilities_example(transform, len(example))
