"""The training task every classifier kind shares; a kind adds its Keras model (``build_model``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.train.task import RankContext, TrainingTask

if TYPE_CHECKING:
    import keras

    from pipelines.core.config import PipelineConfig
    from pipelines.preprocess.transforms import Transform


class ClassifierTask(TrainingTask):
    """One Keras classifier, Adam with a warm-up to ``lr x ranks`` (its loss scaled in
    mixed_float16), validated on the whole val split."""

    def build_model(self, config: PipelineConfig, transform: Transform) -> keras.Model:
        raise NotImplementedError

    def augmentation(self, ctx: RankContext) -> keras.Layer | None:
        """Random layers the training model applies to its inputs first (inactive at inference;
        the exported model is ``build_model``'s, without them). None: no augmentation."""
        return None

    def build(self, ctx: RankContext) -> keras.Model:
        import keras

        from pipelines.train import horovod_keras as hk

        train = ctx.config.train
        model = self.build_model(ctx.config, ctx.transform)
        augment = self.augmentation(ctx)
        if augment is not None:  # they hold no weights: the model's weights stay the served model's
            inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="raw")
            model = keras.Model(inputs, model(augment(inputs)), name=f"augmented_{model.name}")
        binary = model.output_shape[-1] == 1
        # A metric object, not the name "accuracy": Keras creates a named metric's variables inside
        # the first trace of the train step, and TensorFlow then traces the whole step a second time
        # (a fifth to a half of the first epoch's tracing: 7 s of CPU a rank for MobileNetV3).
        accuracy = (keras.metrics.BinaryAccuracy if binary else keras.metrics.SparseCategoricalAccuracy)(
            name="accuracy"
        )
        model.compile(
            optimizer=hk.optimizer(keras.optimizers.Adam, train.precision, learning_rate=self.schedule(ctx)),
            loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
            metrics=[accuracy],
            jit_compile=False,  # Horovod's ops have no XLA kernels here
        )
        model.optimizer.build(model.trainable_variables)
        return model

    def schedule(self, ctx: RankContext):
        """The learning rate: a warm-up to ``lr x ranks`` over ``train.warmup_epochs``, and the
        fine-tuning rate from the step ``fine_tuning`` gives."""
        from pipelines.train import horovod_keras as hk

        train = ctx.config.train
        rate, step = self.fine_tuning(ctx)
        return hk.WarmupSchedule(
            train.learning_rate, ctx.size, int(train.warmup_epochs * ctx.steps_per_epoch), rate, step
        )

    def fine_tuning(self, ctx: RankContext) -> tuple[float | None, int]:
        """The learning rate once a part of the model trained alone is unfrozen, and the step it
        starts at; (None, 0): one rate throughout."""
        return None, 0

    def callbacks(self, ctx: RankContext) -> list:
        from pipelines.train import horovod_keras as hk

        # Batch-norm statistics (a backbone's) averaged over ranks first: validation and the
        # checkpoint see the model every rank holds.
        callbacks = [hk.AverageModelState()]
        if ctx.validate:
            callbacks.append(hk.DistributedValidation(ctx.dataset("val", repeat=False)))
        return callbacks

    def export(self, ctx: RankContext, model: keras.Model) -> keras.Model:
        # Without the distributed optimizer: the served model must not need Horovod.
        export = self.build_model(ctx.config, ctx.transform)
        export.set_weights(model.get_weights())
        return export
