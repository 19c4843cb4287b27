"""The served pyfunc every classifier kind subclasses: raw input in, class probabilities out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlflow.pyfunc
import numpy as np

from pipelines.runtime.logs import drop_type_hint_advice

if TYPE_CHECKING:
    from pipelines.preprocess.transforms import Transform


drop_type_hint_advice()  # before the class: MLflow gives it where a PythonModel subclass is defined


class KerasClassifier(mlflow.pyfunc.PythonModel):
    """A Keras classifier and its fitted transform; predictions are (n, classes) probabilities."""

    def load_context(self, context):
        import keras

        from pipelines.preprocess.transforms import load_transform

        self.transform = load_transform(context.artifacts["transform"])
        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)

    def features(self, model_input):
        raise NotImplementedError

    def predict(self, context, model_input, params=None):
        features = self.features(model_input)
        # predict_on_batch, 256 rows at a time: Keras's predict() builds a data adapter and an
        # iterator on every call, 12% of a 1,000-image call of the image CNN on one thread (measured).
        chunks = [self.model.predict_on_batch(features[i : i + 256]) for i in range(0, len(features), 256)]
        scores = np.concatenate([np.asarray(c) for c in chunks]) if chunks else self._no_rows()
        if scores.shape[-1] == 1:  # one sigmoid unit: the probability of class 1
            scores = np.hstack([1.0 - scores, scores])
        return scores

    def _no_rows(self) -> np.ndarray:
        return np.zeros((0, self.model.output_shape[-1]), np.float32)


def probabilities_example(transform: Transform, rows: int) -> np.ndarray:
    """A uniform (rows, classes) output example for the served model's signature."""
    classes = len(transform.class_names)
    return np.full((rows, classes), 1.0 / classes, np.float32)
