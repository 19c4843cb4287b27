"""The GAN kind: its training step and state in one process, then real 2-rank Horovod training on
the digits, sharing one preprocessed workdir with the image classifier."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.core.catalog import Catalog
from pipelines.evaluate import evaluation
from pipelines.ingest import stage as ingest_stage
from pipelines.kinds.image_gan import quality
from pipelines.pipeline.config_files import load_config
from pipelines.preprocess import stage as preprocess_stage
from pipelines.train import driver, loader
from tests.conftest import ROOT

GAN_CONFIG = ROOT / "conf" / "image_gan.yaml"
SIZE = 16  # 16 px digits: the same code, a quarter of the work of the shipped 32 px


def gan_config(workdir, *overrides: str):
    return load_config(
        GAN_CONFIG,
        [f"workdir={workdir}", "spark.master=local[2]", f"ingest.image_size={SIZE}", *overrides],
    )


# ---------------------------------------------------------------- one process (Horovod size 1)


def _gan(rank: int = 0, seed: int = 42):
    import horovod.tensorflow as hvd

    from pipelines.kinds.image_cnn.transform import ImageTransform
    from pipelines.kinds.image_gan.training import build_gan
    from pipelines.train.task import RankContext

    hvd.init()
    config = gan_config("unused", f"train.seed={seed}")
    transform = ImageTransform(SIZE, [str(i) for i in range(10)], [0.0] * 3, [1.0] * 3)
    return build_gan(RankContext(config, transform, None, "run", rank, 1, 4, False))


def _fit_one_step(gan):
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 255, (32, SIZE, SIZE, 3), dtype=np.uint8)
    data = tf.data.Dataset.from_tensors((images, np.zeros(32, np.int32))).repeat()
    return gan.fit(data, epochs=1, steps_per_epoch=1, verbose=0).history


def _changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_one_step_updates_both_networks_and_both_optimizers():
    gan = _gan()
    generator, discriminator = gan.generator.get_weights(), gan.discriminator.get_weights()
    history = _fit_one_step(gan)
    assert _changed(generator, gan.generator.get_weights())
    assert _changed(discriminator, gan.discriminator.get_weights())
    assert int(gan.d_optimizer.iterations) == int(gan.g_optimizer.iterations) == 1
    assert set(history) == {"d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy"}


def test_noise_differs_by_rank_and_step_and_repeats_for_a_seed():
    rank0, rank1, again = _gan(rank=0), _gan(rank=1), _gan(rank=0)
    first = rank0._noise(4, rank0.d_optimizer, 0).numpy()
    assert not np.allclose(first, rank1._noise(4, rank1.d_optimizer, 0).numpy())
    assert np.array_equal(first, again._noise(4, again.d_optimizer, 0).numpy())
    assert not np.allclose(first, rank0._noise(4, rank0.g_optimizer, 1).numpy())
    rank0.d_optimizer.iterations.assign(1)
    assert not np.allclose(first, rank0._noise(4, rank0.d_optimizer, 0).numpy())


def test_checkpoint_state_restores_both_networks_and_both_optimizers():
    from pipelines.train.horovod_keras import restore_state, state_arrays

    trained = _gan()
    _fit_one_step(trained)
    fresh = _gan()
    restore_state(fresh, state_arrays(trained))
    assert not _changed(trained.get_weights(), fresh.get_weights())
    for mine, theirs in zip(fresh.distributed_optimizers, trained.distributed_optimizers, strict=True):
        assert len(mine.variables) == len(theirs.variables) > 1
        assert all(
            np.array_equal(a.numpy(), b.numpy())
            for a, b in zip(mine.variables, theirs.variables, strict=True)
        )


def test_frechet_distance_is_zero_for_the_same_sample_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((500, 8))
    assert quality.frechet_distance(sample, sample) == pytest.approx(0.0, abs=1e-6)
    near = quality.frechet_distance(sample, rng.standard_normal((500, 8)))
    far = quality.frechet_distance(sample, rng.standard_normal((500, 8)) + 1.0)
    assert near < 0.5 < 7.0 < far  # a shift of 1 in 8 dimensions adds 8


def test_gan_config_checks_the_image_size_against_the_generator(tmp_path):
    from pipelines.core.errors import ConfigError

    with pytest.raises(ConfigError, match="ingest.image_size 30 must be divisible by 2\\*\\*2"):
        gan_config(tmp_path, "ingest.image_size=30")


# ---------------------------------------------------------------- real ranks


@pytest.fixture(scope="module")
def gan_trained(tmp_path_factory, spark, ranks):
    """The digits at 16 px ingested and preprocessed once; 4 epochs of 2-rank GAN training."""
    workdir = tmp_path_factory.mktemp("gan") / "work"
    config = gan_config(workdir, "train.epochs=4", "monitor.sample_every=2", "monitor.quality_samples=500")
    ingest_stage.run(config)
    preprocess_stage.run(config)
    return config, driver.run(config, ranks)


@pytest.mark.slow
def test_two_ranks_end_with_identical_networks_and_quality_improves(gan_trained):
    _, result = gan_trained
    assert len(result.rank_digests) == 2 and result.rank_digests[0] == result.rank_digests[1]
    scores = result.history["frechet_distance"]
    assert len(scores) == 4
    assert scores[-1] < 0.9 * scores[0], scores


@pytest.mark.slow
def test_run_logs_losses_samples_and_a_generator_that_makes_images(gan_trained):
    import mlflow

    config, result = gan_trained
    client = MlflowClient(config.tracking_uri)
    for metric in ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "frechet_distance"):
        assert [m.step for m in client.get_metric_history(result.run_id, metric)] == [1, 2, 3, 4]
    samples = {a.path for a in client.list_artifacts(result.run_id, "samples")}
    assert samples == {"samples/samples_epoch_002.png", "samples/samples_epoch_004.png"}
    assert [a.path for a in client.list_artifacts(result.run_id, "quality")] == [
        "quality/feature_extractor.keras"
    ]

    mlflow.set_tracking_uri(config.tracking_uri)
    generator = mlflow.pyfunc.load_model(result.model_uri)
    images = generator.predict(5)
    assert images.shape == (5, SIZE, SIZE, 3) and images.dtype == np.uint8
    latent = np.zeros((2, config.model.latent_dim), np.float32)
    assert np.array_equal(generator.predict(latent), generator.predict(latent))
    with pytest.raises(ValueError, match="latent vectors must have shape"):
        generator.predict(np.zeros((2, 3), np.float32))


@pytest.mark.slow
def test_evaluate_logs_the_test_frechet_distance(gan_trained, spark):
    config, result = gan_trained
    from pipelines.io import atomic

    metrics = evaluation.run(config, lambda: spark)
    report = atomic.read_json(Catalog.for_workdir(config.workdir).preprocess_report)
    assert metrics["test_rows"] == report["splits"]["test"]["rows"]
    assert np.isfinite(metrics["test_frechet_distance"]) and metrics["test_frechet_distance"] > 0
    run = MlflowClient(config.tracking_uri).get_run(result.run_id)
    assert run.data.metrics["test_frechet_distance"] == pytest.approx(metrics["test_frechet_distance"])
    assert {
        a.path for a in MlflowClient(config.tracking_uri).list_artifacts(result.run_id, "evaluation")
    } == {"evaluation/samples.png"}


@pytest.mark.slow
def test_resume_restores_both_optimizers_and_the_epoch(gan_trained, ranks):
    config, first = gan_trained
    resumed = driver.run(
        config.model_copy(update={"train": config.train.model_copy(update={"resume": True, "epochs": 5})}),
        ranks,
    )
    assert resumed.run_id == first.run_id and resumed.initial_epoch == 4
    assert len(resumed.history["frechet_distance"]) == 1
    steps = loader.plan_shards(Catalog.for_workdir(config.workdir).split("train"), 2, config.train.batch_size)
    with np.load(Catalog.for_workdir(config.workdir).checkpoint(first.run_id)) as saved:
        iterations = [int(saved[key]) for key in saved.files if key.endswith("/iteration")]
    # Both optimizers continued from the checkpoint's step count, not from zero.
    assert iterations == [5 * steps.steps_per_epoch] * 2


@pytest.mark.slow
def test_the_classifier_trains_on_the_gans_workdir_without_ingesting_again(gan_trained, ranks):
    from tests.conftest import image_config

    config, gan = gan_trained
    catalog = Catalog.for_workdir(config.workdir)
    ingested = catalog.ingested.stat().st_mtime_ns
    classifier = image_config(config.workdir, f"ingest.image_size={SIZE}", "train.epochs=1")
    result = driver.run(classifier, ranks)
    assert result.run_id != gan.run_id
    assert catalog.ingested.stat().st_mtime_ns == ingested
    runs = {path.stem for path in (config.workdir / "runs").glob("*.json")}
    assert runs == {"image_cnn", "image_gan"}
    assert catalog.trained_model(result.run_id).is_file() and catalog.trained_model(gan.run_id).is_file()


@pytest.mark.slow
def test_a_gan_promotes_twice_the_second_time_against_the_champion_from_the_registry(
    gan_trained, spark, ranks
):
    from pipelines.promote import promotion

    config, first = gan_trained
    named = ("monitor.quality_samples=500", "mlflow.registered_model=gan-digits")
    assert (
        promotion.run(gan_config(config.workdir, *named), lambda: spark, run_id=first.run_id)["decision"]
        == "promoted"
    )

    second = driver.run(gan_config(config.workdir, "train.epochs=1", *named), ranks)
    result = promotion.run(gan_config(config.workdir, *named), lambda: spark)

    assert result["version"] == "2" and result["champion_version"] == "1"
    assert np.isfinite(result["champion_score"]) and np.isfinite(result["score"])
    assert result["decision"] in ("promoted", "kept")
    assert MlflowClient(config.tracking_uri).get_run(second.run_id).data.tags["dlfusion.promotion.decision"]
