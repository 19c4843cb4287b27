"""Augmentation: random on the train split's batches, the identity everywhere else."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from models.augment import build_augmentation
from pipelines.kinds.image_cnn.task import CnnTask
from pipelines.kinds.image_cnn.transform import ImageTransform
from tests.conftest import image_config

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.uint8)


def test_augmentation_differs_at_every_training_step_repeats_for_a_seed_and_is_the_identity_at_inference():
    assert build_augmentation() is None
    options = dict(flip=True, crop=0.1, rotation=0.05, contrast=0.2, seed=7)
    augment = build_augmentation(**options)
    first, second = (np.asarray(augment(IMAGES, training=True)) for _ in range(2))
    assert not np.allclose(first, second)  # each step (each epoch's batches) draws anew
    assert first.min() >= 0 and first.max() <= 255
    again = np.asarray(build_augmentation(**options)(IMAGES, training=True))
    assert np.array_equal(first, again)  # the same seed gives the same sequence
    assert np.array_equal(np.asarray(augment(IMAGES, training=False)), IMAGES)


def test_the_training_model_augments_but_holds_exactly_the_served_models_weights(tmp_path):
    config = image_config(
        tmp_path, "train.augment.crop=0.1", "train.augment.contrast=0.3", "train.num_proc=1"
    )
    transform = ImageTransform(16, ["a", "b"], [120.0] * 3, [60.0] * 3)
    ctx = SimpleNamespace(
        config=config, transform=transform, size=1, rank=0, steps_per_epoch=4, validate=False
    )
    task = CnnTask()
    trained = task.build(ctx)
    served = task.export(ctx, trained)
    assert [w.shape for w in trained.get_weights()] == [w.shape for w in served.get_weights()]
    assert "augment" in [layer.name for layer in trained.layers]
    assert "augment" not in [layer.name for layer in served.layers]
    at_inference = np.asarray(trained(IMAGES, training=False))
    assert np.allclose(at_inference, np.asarray(served(IMAGES, training=False)), atol=1e-6)
    assert not np.allclose(np.asarray(trained(IMAGES, training=True)), at_inference)
    plain = CnnTask().build(SimpleNamespace(**{**vars(ctx), "config": image_config(tmp_path)}))
    assert "augment" not in [layer.name for layer in plain.layers]  # off unless asked for
