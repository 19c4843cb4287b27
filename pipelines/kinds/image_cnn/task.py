"""The image classifier's training task on every rank: the seed CNN or a ``keras.applications``
backbone (started from ``model.weights``, frozen for ``train.freeze_backbone_epochs``), and its
augmentation.

Apart from the served pyfunc (``model``), so that the ranks never import MLflow.
"""

from __future__ import annotations

import logging

from pipelines.kinds.classifier.task import ClassifierTask

log = logging.getLogger(__name__)


class CnnTask(ClassifierTask):
    def build_model(self, config, transform):
        settings = config.model
        if settings.backbone != "seed_cnn":
            from models.backbones import build_backbone_classifier

            return build_backbone_classifier(
                transform.shape,
                len(transform.class_names),
                settings.backbone,
                dropout=settings.dropout,
                frozen_statistics=settings.weights != "none",
            )
        from models.cnn import build_cnn

        return build_cnn(
            transform.shape,
            len(transform.class_names),
            transform.mean,
            transform.std,
            filters=settings.filters,
            dense_units=settings.dense_units,
            dropout=settings.dropout,
        )

    def build(self, ctx):
        from models.backbones import find_backbone, load_backbone_weights

        model = super().build(ctx)  # the optimizer is built with the backbone's variables too
        backbone = find_backbone(model)
        weights = ctx.config.model.weights
        if backbone is not None and weights != "none":
            from pipelines.core.errors import ConfigError

            try:  # on every rank (a local file: the driver fetched it); rank 0's are broadcast
                load_backbone_weights(backbone, weights)
            except ValueError as err:
                raise ConfigError("model.weights", str(err)) from None
            if ctx.rank == 0:
                log.info("model.weights: the %s backbone starts from %s", ctx.config.model.backbone, weights)
        if backbone is not None and ctx.config.train.freeze_backbone_epochs:
            backbone.trainable = False  # until FreezeUntil's epoch (callbacks)
        return model

    def fine_tuning(self, ctx):
        train = ctx.config.train
        if not train.freeze_backbone_epochs:
            return None, 0
        # Unfrozen, the whole network learns at the fine-tuning rate.
        rate = train.fine_tune_learning_rate or train.learning_rate / 10
        return rate, train.freeze_backbone_epochs * ctx.steps_per_epoch

    def callbacks(self, ctx):
        from models.backbones import find_backbone
        from pipelines.train import horovod_keras as hk

        callbacks = super().callbacks(ctx)
        if ctx.config.train.freeze_backbone_epochs:
            callbacks.append(hk.FreezeUntil(find_backbone, ctx.config.train.freeze_backbone_epochs))
        return callbacks

    def augmentation(self, ctx):
        from models.augment import build_augmentation

        augment = ctx.config.train.augment
        return build_augmentation(
            augment.flip, augment.crop, augment.rotation, augment.contrast, seed=ctx.config.train.seed
        )
