"""Horovod data parallelism for Keras 3 ``model.fit``.

``horovod.tensorflow.keras`` calls Keras 2 APIs that Keras 3 removed, so this small adapter does
what it did with the parts of Horovod that still work: one grouped allreduce of the gradients,
a broadcast of the initial state from rank 0, epoch metrics averaged over ranks, and a learning
rate scaled by the number of ranks after a warm-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def _hvd():
    import horovod.tensorflow as hvd

    return hvd


def _op_name(prefix: str, path: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_.]", "_", path)


def _apply_adam(optimizer, grads, variables, learning_rate) -> None:
    """Adam's update of ``variables`` as TensorFlow's fused kernel (``ResourceApplyAdam``: one op a
    variable, the arithmetic of Keras' ``Adam.update_step``), the step's shared factors computed once."""
    step = tf.cast(optimizer.iterations + 1, tf.float32)
    factors = {}
    for grad, variable in zip(grads, variables, strict=True):
        dtype = variable.dtype
        if dtype not in factors:
            beta_1, beta_2 = optimizer.beta_1, optimizer.beta_2
            scalars = (beta_1**step, beta_2**step, learning_rate, beta_1, beta_2, optimizer.epsilon)
            factors[dtype] = [tf.cast(value, dtype) for value in scalars]
        beta_1_power, beta_2_power, rate, beta_1, beta_2, epsilon = factors[dtype]
        index = optimizer._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=optimizer._momentums[index].handle,
            v=optimizer._velocities[index].handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=rate,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=epsilon,
            grad=tf.cast(tf.convert_to_tensor(grad), dtype),
        )


def fused(optimizer_class: type[keras.optimizers.Optimizer]) -> type:
    """``optimizer_class``, an Adam's update applied by TensorFlow's fused kernel: 4 graph ops a
    variable instead of Keras' 40 (counted), the same state and arithmetic, the first step traced
    in a fraction of the time (MobileNetV3's 140 variables: 4.9 s of building the update's graph,
    measured) and faster steps. Other optimizers, AMSGrad and tf.distribute strategies are left to
    Keras."""
    if not issubclass(optimizer_class, keras.optimizers.Adam):
        return optimizer_class

    class FusedAdam(optimizer_class):
        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            if self.amsgrad or tf.distribute.has_strategy():
                return super()._backend_update_step(grads, trainable_variables, learning_rate)
            _apply_adam(self, grads, trainable_variables, learning_rate)

    FusedAdam.__name__ = f"Fused{optimizer_class.__name__}"
    return FusedAdam


def distributed(optimizer_class: type[keras.optimizers.Optimizer]) -> type:
    """Subclass ``optimizer_class`` (``fused``) so that gradients are averaged over ranks before applying."""

    class DistributedOptimizer(fused(optimizer_class)):
        def apply(self, grads, trainable_variables=None):
            hvd = _hvd()
            if hvd.size() > 1:
                present = [i for i, g in enumerate(grads) if g is not None]
                averaged = hvd.grouped_allreduce([grads[i] for i in present], op=hvd.Average)
                grads = list(grads)
                for i, g in zip(present, averaged, strict=False):
                    grads[i] = g
            return super().apply(grads, trainable_variables)

    DistributedOptimizer.__name__ = f"Distributed{optimizer_class.__name__}"
    return DistributedOptimizer


def optimizer(optimizer_class: type, precision: str = "float32", **options) -> keras.optimizers.Optimizer:
    """``optimizer_class(**options)`` with its gradients averaged over ranks (``distributed``); in
    mixed_float16, inside a loss-scaling optimizer that averages the still-scaled gradients first,
    so that every rank sees the same gradients and takes the same decision to apply them or to
    lower the scale (a rank skipping a step alone would leave the others waiting in the next
    allreduce)."""
    if precision == "mixed_float16":
        return distributed(keras.optimizers.LossScaleOptimizer)(fused(optimizer_class)(**options))
    return distributed(optimizer_class)(**options)


@keras.saving.register_keras_serializable("dlfusion")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Ramps the learning rate linearly from ``base`` to ``base * multiplier`` over ``warmup_steps``;
    from ``fine_tune_step`` on (when ``fine_tune`` is set), ``fine_tune * multiplier``.

    Large effective batches (batch size x ranks) need the larger rate; starting there diverges.
    The step is the optimizer's own counter, so a resumed run continues the ramp where it was.
    """

    def __init__(
        self,
        base: float,
        multiplier: float,
        warmup_steps: int,
        fine_tune: float | None = None,
        fine_tune_step: int = 0,
    ):
        self.base = float(base)
        self.multiplier = float(multiplier)
        self.warmup_steps = int(warmup_steps)
        self.fine_tune = None if fine_tune is None else float(fine_tune)
        self.fine_tune_step = int(fine_tune_step)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self.base * (1.0 + (self.multiplier - 1.0) * tf.minimum(step / max(self.warmup_steps, 1), 1.0))
        if self.fine_tune is None:
            return rate
        return tf.where(step >= self.fine_tune_step, self.fine_tune * self.multiplier, rate)

    def get_config(self):
        return {
            "base": self.base,
            "multiplier": self.multiplier,
            "warmup_steps": self.warmup_steps,
            "fine_tune": self.fine_tune,
            "fine_tune_step": self.fine_tune_step,
        }


class FreezeUntil(keras.callbacks.Callback):
    """Keep the layer ``find(model)`` returns frozen in epochs before ``epoch`` and trainable from
    it on, a resumed run included. The train step is traced again at each change: a traced step
    keeps the variables it was traced with. The optimizer must have been built with the layer's
    variables (while trainable)."""

    def __init__(self, find: Callable[[keras.Model], keras.Layer], epoch: int):
        super().__init__()
        self.find, self.epoch = find, epoch

    def on_epoch_begin(self, epoch, logs=None):
        layer = self.find(self.model)
        trainable = epoch >= self.epoch
        if layer.trainable != trainable:
            layer.trainable = trainable
            self.model.make_train_function(force=True)


def broadcast_variables(variables, root_rank: int = 0) -> None:
    """Overwrite ``variables`` on every rank with their values on ``root_rank``."""
    hvd = _hvd()
    for variable in variables:
        value = hvd.broadcast(
            tf.convert_to_tensor(variable), root_rank, name=_op_name("bcast.", variable.path)
        )
        variable.assign(value)


class BroadcastInitialState(keras.callbacks.Callback):
    """At the start of training, make every rank's weights and optimizers' state equal rank 0's."""

    def on_train_begin(self, logs=None):
        if _hvd().size() > 1:
            broadcast_variables(_state_variables(self.model))


class AverageEpochMetrics(keras.callbacks.Callback):
    """Replace each epoch's logs with their average over ranks; list it before callbacks that read logs."""

    def on_epoch_end(self, epoch, logs=None):
        hvd = _hvd()
        if not logs or hvd.size() == 1:
            return
        keys = sorted(logs)
        local = tf.constant([float(logs[key]) for key in keys], dtype=tf.float64)
        averaged = hvd.allreduce(local, op=hvd.Average, name=f"metrics.epoch{epoch}").numpy()
        logs.update({key: float(value) for key, value in zip(keys, averaged, strict=False)})


class AverageModelState(keras.callbacks.Callback):
    """At each epoch end, average the model's non-trainable float variables over ranks.

    Batch-norm moving statistics are not gradients: each rank's follow its own shard, so without
    this the ranks would end with different models (and rank 0's would be served).
    """

    def on_epoch_end(self, epoch, logs=None):
        hvd = _hvd()
        variables = [v for v in self.model.non_trainable_variables if "float" in str(v.dtype)]
        if hvd.size() == 1 or not variables:
            return
        averaged = hvd.grouped_allreduce(
            [tf.convert_to_tensor(v) for v in variables], op=hvd.Average, name=f"state.epoch{epoch}"
        )
        for variable, value in zip(variables, averaged, strict=True):
            variable.assign(value)


class DistributedEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping with restore-best, deciding alike on every rank.

    The monitored value is rank 0's (epoch metrics are already averaged over ranks, validation is
    global, and a kind's rank-0 scores exist only there), broadcast so that every rank stops at the
    same epoch and restores the same best weights. ``best_file`` keeps the best epoch's weights on
    disk, so that a resumed run still ends with the best model.
    """

    def __init__(self, best_file, **options):
        super().__init__(restore_best_weights=True, **options)
        self.best_file = best_file

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.best_file.is_file():  # resumed: the best so far survives the restart
            with np.load(self.best_file) as saved:
                self.best = float(saved["__value__"])
                self.best_epoch = int(saved["__epoch__"]) - 1
                self.best_weights = [saved[f"w{i:05d}"] for i in range(len(saved.files) - 2)]

    def on_epoch_end(self, epoch, logs=None):
        hvd = _hvd()
        value = (logs or {}).get(self.monitor)
        if hvd.size() > 1:
            value = hvd.broadcast_object(value, root_rank=0, name=f"early_stopping.epoch{epoch}")
        if value is None:
            known = ", ".join(sorted(logs or {}))
            raise ValueError(f"train.early_stopping.metric {self.monitor!r} is not logged (logged: {known})")
        super().on_epoch_end(epoch, {**(logs or {}), self.monitor: value})
        if self.wait == 0 and hvd.rank() == 0:  # improved this epoch (no baseline is used)
            self._save_best(value)

    def _save_best(self, value: float) -> None:
        from pipelines.io.atomic import write_npz_atomically

        weights = {f"w{i:05d}": w for i, w in enumerate(self.best_weights)}
        epoch = np.int64(self.best_epoch + 1)
        write_npz_atomically(self.best_file, __epoch__=epoch, __value__=np.float64(value), **weights)

    def summary(self) -> dict:
        """Best epoch (1-based), the epoch training stopped at (None: ran to the end) and why."""
        stopped = self.stopped_epoch + 1 if self.stopped_epoch > 0 else None
        best = self.best_epoch + 1
        if stopped:
            reason = f"{self.monitor} did not improve by {abs(self.min_delta)} for {self.patience} epoch(s)"
        else:
            reason = "ran all epochs"
        return {
            "best_epoch": best,
            "best_value": float(self.best),
            "stopped_epoch": stopped,
            "reason": reason,
        }


class DistributedValidation(keras.callbacks.Callback):
    """At each epoch end, evaluate every rank's whole validation shard and log ``val_loss`` and
    ``val_accuracy`` over all ranks, weighted by rows.

    Keras' own validation cannot be used: it re-iterates or stops a data set by steps, and ranks
    hold shards of different sizes. Each iteration of ``dataset`` must be one full pass.
    """

    # A shard up to this size is kept in memory after the first pass: the later epochs skip the
    # readers' start (a Petastorm reader and its threads per pass, 0.1 s an epoch on the demo).
    keep_bytes = 256 * 2**20

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self._batch_totals = None
        self._kept: list | None = None  # the shard's batches, once read, if it is small

    def _totals_of(self, features, labels):
        """(loss sum, correct, rows) of one batch, as one traced function: per batch in eager mode
        the model call, the loss and the counts cost several dispatches each."""
        predicted = self.model(features, training=False)
        count = tf.cast(tf.shape(labels)[0], tf.float64)
        loss = tf.cast(self.model.compute_loss(x=features, y=labels, y_pred=predicted), tf.float64)
        if predicted.shape[-1] == 1:
            guesses = tf.cast(tf.reshape(predicted, (-1,)) > 0.5, labels.dtype)
        else:
            guesses = tf.cast(tf.argmax(predicted, axis=-1), labels.dtype)
        return tf.stack([loss * count, tf.reduce_sum(tf.cast(guesses == labels, tf.float64)), count])

    def shard_totals(self) -> tuple[float, float, float]:
        """(loss sum, correct, rows) over this rank's whole shard; a small shard is read once."""
        if self._batch_totals is None:
            self._batch_totals = tf.function(self._totals_of, reduce_retracing=True)
        loss_sum = correct = rows = 0.0
        kept, kept_bytes = [], 0
        for features, labels in self._kept if self._kept is not None else self.dataset:
            batch_loss, batch_correct, count = (
                float(x) for x in self._batch_totals(features, labels).numpy()
            )
            loss_sum, correct, rows = loss_sum + batch_loss, correct + batch_correct, rows + count
            if self._kept is None and kept is not None:
                kept.append((features, labels))
                kept_bytes += features.shape.num_elements() * features.dtype.size
                kept = kept if kept_bytes <= self.keep_bytes else None
        if self._kept is None:
            self._kept = kept
        return loss_sum, correct, rows

    def on_epoch_end(self, epoch, logs=None):
        loss_sum, correct, rows = self.shard_totals()
        hvd = _hvd()
        totals = tf.constant([loss_sum, correct, rows], dtype=tf.float64)
        if hvd.size() > 1:
            totals = hvd.allreduce(totals, op=hvd.Sum, name=f"validation.epoch{epoch}")
        loss_sum, correct, rows = (float(x) for x in np.asarray(totals))
        if logs is not None and rows:
            logs["val_loss"] = loss_sum / rows
            logs["val_accuracy"] = correct / rows


def optimizers_of(model: keras.Model) -> list:
    """The model's optimizers: ``distributed_optimizers`` where a model trains several (a GAN)."""
    return list(getattr(model, "distributed_optimizers", None) or [model.optimizer])


def _state_variables(model: keras.Model) -> list:
    return list(model.variables) + [v for optimizer in optimizers_of(model) for v in optimizer.variables]


def state_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """Model weights and optimizer state, keyed "<position>|<variable path>" (what a checkpoint holds).

    Restoring goes by position: paths get suffixes ("adam_1/...") when a process builds a second
    model, so they are kept for reading only.
    """
    return {f"{i:05d}|{v.path}": np.asarray(v.numpy()) for i, v in enumerate(_state_variables(model))}


def restore_state(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    """Assign checkpointed ``arrays`` back to the model's and optimizer's variables, by position."""
    variables = _state_variables(model)
    saved = [arrays[key] for key in sorted(arrays)]
    shapes = [tuple(v.shape) for v in variables]
    if [a.shape for a in saved] != shapes:
        raise ValueError(
            f"checkpoint does not match the model ({len(saved)} saved arrays for {len(variables)} variables)"
        )
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(value)
