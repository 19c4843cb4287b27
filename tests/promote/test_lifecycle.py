"""Model lifecycle: early stopping with the best epoch's model, and the promotion gate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.core.catalog import Catalog
from pipelines.ingest import stage as ingest_stage
from pipelines.preprocess import stage as preprocess_stage
from pipelines.promote import promotion
from pipelines.train import driver, rank_loop
from tests.conftest import image_config


@pytest.fixture(scope="module")
def noise_workdir(tmp_path_factory, spark):
    """Random images with random labels: a model can only memorise them, so validation loss rises."""
    from PIL import Image

    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for index in range(900):
        folder = root / "raw" / f"class_{rng.integers(3)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    overrides = [f"data.source={root / 'raw'}", "ingest.image_size=16", "preprocess.rows_per_row_group=32"]
    config = image_config(root / "work", *overrides)
    ingest_stage.run(config)
    preprocess_stage.run(config)
    return root / "work", overrides


@pytest.mark.slow
def test_early_stopping_stops_all_ranks_at_one_epoch_and_keeps_the_best_model(noise_workdir, ranks):
    import keras

    workdir, overrides = noise_workdir
    config = image_config(
        workdir,
        *overrides,
        "train.epochs=12",
        "train.learning_rate=0.003",
        "train.early_stopping.enabled=true",
        "train.early_stopping.patience=1",
    )
    result = driver.run(config, ranks)
    early = result.early_stopping
    assert early["stopped_epoch"] is not None and early["stopped_epoch"] < 12, early
    assert early["best_epoch"] == early["stopped_epoch"] - 1  # patience 1
    assert len(result.history["val_loss"]) == early["stopped_epoch"]  # every rank stopped there (checked)
    assert min(result.history["val_loss"]) == pytest.approx(early["best_value"])

    catalog = Catalog.for_workdir(config.workdir)
    with np.load(catalog.best_weights(result.run_id)) as best:
        assert int(best["__epoch__"]) == early["best_epoch"]
        best_weights = [best[f"w{i:05d}"] for i in range(len(best.files) - 2)]
    exported = keras.models.load_model(catalog.trained_model(result.run_id), compile=False)
    assert rank_loop.weights_digest(exported.get_weights()) == rank_loop.weights_digest(best_weights)

    tags = MlflowClient(config.tracking_uri).get_run(result.run_id).data.tags
    assert tags["dlfusion.early_stopping.best_epoch"] == str(early["best_epoch"])
    assert tags["dlfusion.early_stopping.stopped_epoch"] == str(early["stopped_epoch"])
    assert "did not improve" in tags["dlfusion.early_stopping.reason"]


@pytest.mark.slow
def test_the_gate_moves_the_champion_alias_only_for_a_better_model(digits_workdir, tmp_path, spark, ranks):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    registered = "mlflow.registered_model=digits"

    def train_and_promote(*overrides: str, override_gate: bool = False) -> dict:
        config = image_config(workdir, registered, *overrides)
        driver.run(config, ranks)
        return promotion.run(config, lambda: spark, override_gate=override_gate)

    weak = train_and_promote("train.epochs=1", "train.learning_rate=0.00001", "train.warmup_epochs=0")
    assert weak["decision"] == "promoted" and weak["champion_version"] is None
    strong = train_and_promote("train.epochs=2")
    assert strong["decision"] == "promoted" and strong["champion_version"] == weak["version"]
    assert strong["margin"] > 0.3
    worse = train_and_promote(
        "train.epochs=1", "train.learning_rate=0.00001", "train.warmup_epochs=0", "train.seed=7"
    )
    assert (
        worse["decision"] == "kept" and worse["champion_version"] == strong["version"] and worse["margin"] < 0
    )

    client = MlflowClient(image_config(workdir).tracking_uri)
    assert str(client.get_model_version_by_alias("digits", "champion").version) == strong["version"]
    # A model must also beat the majority-class baseline on macro-F1 by promote.baseline_margin.
    gated = promotion.run(image_config(workdir, registered, "promote.baseline_margin=1.0"), lambda: spark)
    assert gated["decision"] == "kept" and gated["reason"].endswith("< promote.baseline_margin 1.0")
    assert str(client.get_model_version_by_alias("digits", "champion").version) == strong["version"]
    forced = promotion.run(image_config(workdir, registered), lambda: spark, override_gate=True)
    assert forced["decision"] == "forced" and forced["forced"] is True
    assert str(client.get_model_version_by_alias("digits", "champion").version) == worse["version"]
    version_tags = client.get_model_version("digits", worse["version"]).tags
    assert version_tags["dlfusion.promotion.decision"] == "forced"
    assert version_tags["dlfusion.promotion.forced"] == "True"
    run_tags = client.get_run(client.get_model_version("digits", worse["version"]).run_id).data.tags
    assert run_tags["dlfusion.promotion.champion_score"] == str(strong["score"])


def test_promote_without_a_registered_model_is_a_one_line_config_error(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "promote", "conf/image_cnn.yaml", f"workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "dlfusion: error: config error: mlflow.registered_model: is required to promote "
        "(the registry name of the model)"
    )


def test_the_majority_baseline_is_what_always_answering_the_train_majority_scores():
    from pipelines.kinds.classifier.evaluation import classification_metrics, majority_baseline

    # Test rows: 6 of class a, 3 of b, 1 of c (rows: true class, columns: predicted). Train's majority: a.
    matrix = np.array([[5, 1, 0], [1, 2, 0], [0, 0, 1]])
    baseline = majority_baseline(matrix, [70, 20, 10], ["a", "b", "c"])
    assert baseline["test_majority_accuracy"] == pytest.approx(0.6)
    # Class a: precision 0.6, recall 1, F1 0.75; b and c: 0. Macro-F1 = 0.25.
    assert baseline["test_majority_macro_f1"] == pytest.approx(0.25)
    assert classification_metrics(matrix, ["a", "b", "c"])["test_macro_f1"] > 0.25 + 0.05


def test_a_classifier_that_does_not_beat_the_majority_baseline_is_never_promoted_unless_forced():
    from pipelines.kinds import kind_named

    classifier, gan = kind_named("image_cnn"), kind_named("image_gan")
    learned = {"test_macro_f1": 0.40, "test_majority_macro_f1": 0.26}
    prior_only = {"test_macro_f1": 0.28, "test_majority_macro_f1": 0.26}
    assert promotion.below_baseline(classifier, learned, 0.05) is None
    assert promotion.below_baseline(classifier, prior_only, 0.05) == (
        "test_macro_f1 0.2800 beats test_majority_macro_f1 0.2600 by 0.0200 < promote.baseline_margin 0.05"
    )
    assert promotion.below_baseline(gan, {}, 0.05) is None  # no baseline for a GAN
