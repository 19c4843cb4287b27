"""Scoring: the MLflow pyfunc models (raw input in, class probabilities out) and batch scoring in Spark."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version

import mlflow.pyfunc
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from pipelines.transforms import Transform


def requirements() -> list[str]:
    """What a serving environment needs to load the logged model."""
    return [
        f"{name}=={version(name)}"
        for name in ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow", "pyarrow", "pyspark")
    ]


class _KerasClassifier(mlflow.pyfunc.PythonModel):
    """A Keras classifier and its fitted transform; predictions are (n, classes) probabilities."""

    def load_context(self, context):
        import keras

        from pipelines.transforms import load_transform

        self.transform = load_transform(context.artifacts["transform"])
        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)

    def features(self, model_input):
        raise NotImplementedError

    def predict(self, context, model_input, params=None):
        scores = np.asarray(self.model.predict(self.features(model_input), verbose=0, batch_size=256))
        if scores.shape[-1] == 1:  # one sigmoid unit: the probability of class 1
            scores = np.hstack([1.0 - scores, scores])
        return scores


class ImageClassifier(_KerasClassifier):
    """Takes uint8 images of shape (n, size, size, 3)."""

    def features(self, model_input):
        return self.transform.to_images(np.asarray(model_input, dtype=np.uint8))


class TextClassifier(_KerasClassifier):
    """Takes raw text: a DataFrame with a ``text`` column (or a list of strings)."""

    def features(self, model_input):
        texts = model_input["text"] if isinstance(model_input, pd.DataFrame) else model_input
        return self.transform.encode(list(texts))


def pyfunc_for(transform: Transform) -> tuple[_KerasClassifier, object]:
    """The pyfunc model class for ``transform``'s kind, and an input example for its signature."""
    if transform.kind == "text":
        return TextClassifier(), pd.DataFrame({"text": ["a great film", "it was awful &amp; dull"]})
    return ImageClassifier(), np.zeros((2, *transform.feature_shape), dtype=np.uint8)


def predict_split(df: DataFrame, model_uri: str, tracking_uri: str, transform: Transform) -> DataFrame:
    """Score rows of a split with the logged model, in Spark: adds ``prediction`` and ``confidence``.

    The model gets the same raw input a user would give it (images, or text); it is loaded once
    per partition on the executors, and only plain strings and the transform cross to them.
    """

    def predict_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import mlflow

        from pipelines.logs import quiet_library_warnings

        quiet_library_warnings()
        mlflow.set_tracking_uri(tracking_uri)
        model = mlflow.pyfunc.load_model(model_uri)
        for batch in batches:
            if batch.empty:
                continue
            probabilities = np.asarray(model.predict(transform.model_input(batch)))
            yield pd.DataFrame(
                {
                    "label": batch["label"],
                    "prediction": probabilities.argmax(axis=1).astype(np.int32),
                    "confidence": probabilities.max(axis=1).astype(np.float64),
                }
            )

    schema = "label int, prediction int, confidence double"
    return df.mapInPandas(predict_partition, schema)
