"""The image classifier's training task on every rank: the CNN, and its augmentation.

Apart from the served pyfunc (``model``), so that the ranks never import MLflow.
"""

from __future__ import annotations

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
