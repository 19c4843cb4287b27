"""Scoring: the MLflow pyfunc model (raw uint8 images in, probabilities out) and batch scoring in Spark."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version

import mlflow.pyfunc
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame


def requirements() -> list[str]:
    """What a serving environment needs to load the logged model."""
    return [
        f"{name}=={version(name)}"
        for name in ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow", "pyarrow", "pyspark")
    ]


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Predicts class probabilities from uint8 images of shape (n, size, size, 3)."""

    def load_context(self, context):
        import keras

        from pipelines.transforms import ImageTransform

        self.transform = ImageTransform.load(context.artifacts["transform"])
        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)

    def predict(self, context, model_input, params=None):
        images = np.asarray(model_input, dtype=np.uint8).reshape((-1, *self.transform.shape))
        return self.model.predict(images, verbose=0, batch_size=256)


def predict_split(df: DataFrame, model_uri: str, tracking_uri: str, shape: tuple[int, int, int]) -> DataFrame:
    """Add ``prediction`` (class index) and ``confidence`` to rows of an image split, in Spark.

    The model is loaded once per partition on the executors; only plain strings cross to them.
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
            flat = np.frombuffer(b"".join(batch["pixels"]), dtype=np.uint8)
            probabilities = np.asarray(model.predict(flat.reshape((len(batch), *shape))))
            yield pd.DataFrame(
                {
                    "relpath": batch["relpath"],
                    "label": batch["label"],
                    "prediction": probabilities.argmax(axis=1).astype(np.int32),
                    "confidence": probabilities.max(axis=1).astype(np.float64),
                }
            )

    schema = "relpath string, label int, prediction int, confidence double"
    return df.select("relpath", "label", "pixels").mapInPandas(predict_partition, schema)
