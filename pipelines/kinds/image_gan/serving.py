"""The GAN's served model (a count or latent vectors in, uint8 images out) and its test evaluation."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipelines.kinds.image_gan import quality
from pipelines.runtime.logs import drop_type_hint_advice

drop_type_hint_advice()  # before the class: MLflow gives it where a PythonModel subclass is defined


class ImageGenerator(mlflow.pyfunc.PythonModel):
    """The trained generator.

    Input: latent vectors, a float array of shape (n, latent_dim); or a count, as an int or a
    DataFrame with a ``count`` column (and optionally ``seed``): that many images from seeded
    noise. Output: uint8 images of shape (n, size, size, 3).
    """

    def load_context(self, context):
        import keras

        self.generator = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.latent_dim = int(self.generator.input_shape[-1])

    def latent(self, model_input) -> np.ndarray:
        if isinstance(model_input, pd.DataFrame) and "count" in model_input:
            seed = int(model_input["seed"].iloc[0]) if "seed" in model_input else 0
            model_input = int(model_input["count"].sum()), seed
        if isinstance(model_input, (int, np.integer)):
            model_input = int(model_input), 0
        if isinstance(model_input, tuple):
            count, seed = model_input
            return np.random.default_rng(seed).standard_normal((count, self.latent_dim)).astype(np.float32)
        latent = np.asarray(model_input, dtype=np.float32)
        if latent.ndim != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"latent vectors must have shape (n, {self.latent_dim}), got {latent.shape}")
        return latent

    def predict(self, context, model_input, params=None):
        latent = self.latent(model_input)
        return quality.to_uint8(self.generator.predict(latent, batch_size=256, verbose=0))


def served_model(transform, model_config):
    """The pyfunc and no signature: it takes either a count or latent vectors (see ImageGenerator)."""
    return ImageGenerator(), None, None


def evaluate(config, start_spark, model_uri: str, catalog, artifacts: Path, ranks=None) -> dict[str, float]:
    """The Fréchet distance between the test split and as many generated images, in the run's feature
    space; a grid of generated samples into ``artifacts`` (on the driver: neither ``ranks`` nor Spark
    is used)."""
    import keras

    from pipelines.preprocess.transforms import load_transform
    from pipelines.track import pyfunc, runs

    run_id = pyfunc.run_of(model_uri, config.tracking_uri)  # runs:/ from evaluate, models:/ from promote
    transform = load_transform(catalog.transform)
    extractor_file = quality.feature_extractor_file(catalog, run_id)
    if not extractor_file.is_file():  # evaluated elsewhere than trained: the run's copy
        extractor_file = runs.download_run_artifact(
            config.tracking_uri, run_id, "quality/feature_extractor.keras"
        )
    extractor = keras.models.load_model(extractor_file, compile=False)
    real, _ = quality.read_images(catalog.split("test"), transform, config.monitor.quality_samples)
    generator = pyfunc.load_model(model_uri, config.tracking_uri)
    fake = np.asarray(generator.predict(pd.DataFrame({"count": [len(real)], "seed": [config.train.seed]})))
    score = quality.frechet_distance(
        quality.features(extractor, quality.to_unit_range(real)),
        quality.features(extractor, quality.to_unit_range(fake)),
    )
    quality.save_grid(
        fake[: config.monitor.grid**2], artifacts / "samples.png", f"test: Fréchet distance {score:.2f}"
    )
    return {"test_frechet_distance": score, "test_rows": float(len(real))}
