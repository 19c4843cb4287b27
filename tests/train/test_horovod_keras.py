"""Pieces of the Keras 3 Horovod adapter and of training planning that need no running ranks."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.train.driver import class_weights
from pipelines.train.horovod_keras import WarmupSchedule, restore_state, state_arrays


def test_warmup_ramps_the_learning_rate_to_base_times_ranks():
    schedule = WarmupSchedule(base=0.001, multiplier=4, warmup_steps=100)
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(50)) == pytest.approx(0.0025)
    assert float(schedule(100)) == pytest.approx(0.004)
    assert float(schedule(10_000)) == pytest.approx(0.004)
    assert WarmupSchedule(**schedule.get_config()).get_config() == schedule.get_config()


def test_class_weights_balance_the_classes():
    weights = class_weights([700, 300])
    assert weights[0] * 700 == pytest.approx(weights[1] * 300)  # each class carries the same weight
    assert (weights[0] * 700 + weights[1] * 300) / 1000 == pytest.approx(1.0)  # mean weight 1
    assert class_weights([5, 0, 5]) == {0: 1.0, 2: 1.0}  # an absent class gets no weight


def test_checkpoint_state_round_trips_weights_and_optimizer_state():
    import keras

    from models.cnn import build_cnn

    def compiled():
        model = build_cnn((8, 8, 3), 3, [0.0] * 3, [1.0] * 3, filters=[4], dense_units=8)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        return model

    trained = compiled()
    images = np.random.default_rng(0).integers(0, 255, (16, 8, 8, 3), dtype=np.uint8)
    trained.fit(images, np.arange(16) % 3, epochs=1, verbose=0)
    saved = state_arrays(trained)
    assert [int(v) for k, v in saved.items() if k.endswith("/iteration")] == [1]

    fresh = compiled()
    restore_state(fresh, saved)
    assert all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained.get_weights(), strict=True))
    assert int(fresh.optimizer.iterations.numpy()) == 1
    with pytest.raises(ValueError, match="does not match"):
        restore_state(fresh, {k: v for k, v in saved.items() if "conv1/kernel" not in k})


def test_validation_reads_a_small_shard_once_and_scores_it_the_same_every_epoch():
    import keras
    import tensorflow as tf

    from models.cnn import build_cnn
    from pipelines.train.horovod_keras import DistributedValidation

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 40)
    passes = []

    def shard():
        passes.append(1)
        yield from ((images[i : i + 16], labels[i : i + 16]) for i in range(0, 40, 16))

    signature = (tf.TensorSpec((None, 8, 8, 3), tf.uint8), tf.TensorSpec((None,), tf.int64))
    dataset = tf.data.Dataset.from_generator(shard, output_signature=signature)
    model = build_cnn((8, 8, 3), 3, [0.0] * 3, [1.0] * 3, filters=[4], dense_units=8)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    kept, streamed = DistributedValidation(dataset), DistributedValidation(dataset)
    streamed.keep_bytes = 0
    scores: dict = {}
    for name, callback in (("kept", kept), ("streamed", streamed)):
        callback.set_model(model)
        passes.clear()
        scores[name] = [callback.shard_totals() for _ in range(3)]
        scores[name + "_passes"] = len(passes)
    assert scores["kept"] == scores["streamed"] and scores["kept"][0][2] == 40
    assert (scores["kept_passes"], scores["streamed_passes"]) == (1, 3)


def test_a_frozen_backbone_learns_from_the_epoch_it_is_unfrozen_also_when_resumed_there():
    import keras

    from pipelines.train.horovod_keras import FreezeUntil, WarmupSchedule

    def model_and_backbone():
        inputs = keras.Input((4,))
        backbone = keras.Sequential([keras.layers.Dense(8, activation="relu")], name="backbone")
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(backbone(inputs)))
        schedule = WarmupSchedule(0.01, 1, 0, fine_tune=0.001, fine_tune_step=4)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)  # with the backbone's, as ClassifierTask does
        backbone.trainable = False
        return model, backbone

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)
    model, backbone = model_and_backbone()
    before = [w.copy() for w in backbone.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[FreezeUntil(lambda m: backbone, 1)], verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, backbone.get_weights(), strict=True))
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        initial_epoch=1,
        callbacks=[FreezeUntil(lambda m: backbone, 1)],
        verbose=0,
    )
    assert backbone.trainable and not np.array_equal(before[0], backbone.get_weights()[0])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)  # the fine-tuning rate

    resumed, resumed_backbone = model_and_backbone()  # a run resumed after the freeze learns at once
    before = resumed_backbone.get_weights()[0].copy()
    callback = FreezeUntil(lambda m: resumed_backbone, 1)
    resumed.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, callbacks=[callback], verbose=0)
    assert not np.array_equal(before, resumed_backbone.get_weights()[0])


def test_a_classifiers_train_step_is_traced_once():
    """No variable is created inside the first trace of the step (Keras then makes a metric named
    "accuracy" there, and TensorFlow traces the whole step twice: seconds of CPU a rank)."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    from pipelines.kinds.image_cnn.task import CnnTask
    from pipelines.kinds.image_cnn.transform import ImageTransform
    from pipelines.train.task import RankContext
    from tests.conftest import image_config

    hvd.init()
    transform = ImageTransform(8, [str(i) for i in range(3)], [0.0] * 3, [1.0] * 3)
    model = CnnTask().build(RankContext(image_config("unused"), transform, None, "run", 0, 1, 2, False))
    created = []

    def creator(next_creator, **options):
        created.append(options.get("name"))
        return next_creator(**options)

    images = np.zeros((4, 8, 8, 3), np.uint8)
    with tf.variable_creator_scope(creator):
        model.fit(images, np.array([0, 1, 2, 0]), batch_size=2, epochs=1, verbose=0)
    assert created == []


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_the_fused_adam_update_trains_as_keras_adam_does(precision):
    """The ranks' Adam applies its update with TensorFlow's fused kernel (one op a variable, which
    traces in a fraction of the time): the same state and, within rounding, the same weights."""
    import horovod.tensorflow as hvd
    import keras

    from models.cnn import build_cnn
    from pipelines.train.horovod_keras import fused, optimizer

    hvd.init()  # one rank: nothing to average

    def trained(adam):
        keras.utils.set_random_seed(3)
        model = build_cnn((8, 8, 3), 3, [0.0] * 3, [1.0] * 3, filters=[4], dense_units=8)
        model.compile(optimizer=adam, loss="sparse_categorical_crossentropy", jit_compile=False)
        images = np.random.default_rng(0).integers(0, 255, (48, 8, 8, 3), dtype=np.uint8)
        model.fit(images, np.arange(48) % 3, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return model, adam

    keras.mixed_precision.set_global_policy(precision)
    try:
        (ranks_model, ranks_adam), (keras_model, keras_adam) = (
            trained(optimizer(keras.optimizers.Adam, precision, learning_rate=0.01)),
            trained(keras.optimizers.Adam(learning_rate=0.01)),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    ranks_adam = getattr(ranks_adam, "inner_optimizer", ranks_adam)  # mixed_float16: inside loss scaling
    assert "FusedAdam" in [cls.__name__ for cls in type(ranks_adam).__mro__]
    assert fused(keras.optimizers.SGD) is keras.optimizers.SGD
    assert [v.name for v in ranks_adam.variables] == [v.name for v in keras_adam.variables]
    for ours, theirs in zip(ranks_model.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
