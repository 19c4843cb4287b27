"""Training with real Horovod ranks (Gloo processes and Spark executors), tracked in a real MLflow store."""

from __future__ import annotations

import json
import time

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.core.catalog import Catalog
from pipelines.core.errors import TrainingError
from pipelines.evaluate import evaluation
from pipelines.io import atomic
from pipelines.preprocess.transforms import class_indices, load_transform
from pipelines.train import driver, launchers, loader
from tests.conftest import IMAGE_CONFIG, image_config, spark_must_not_start

pytestmark = pytest.mark.slow  # every test here trains on Horovod ranks, or uses a model trained so


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_workdir, spark, ranks):
    """Two epochs of 2-rank training on the digits demo, with the local (Gloo) launcher."""
    import shutil

    workdir = tmp_path_factory.mktemp("trained") / "work"
    shutil.copytree(digits_workdir, workdir)
    config = image_config(workdir, "train.epochs=2")
    return config, driver.run(config, ranks)


def test_two_ranks_end_with_identical_weights(trained):
    _, result = trained
    assert len(result.rank_digests) == 2
    assert result.rank_digests[0] == result.rank_digests[1]
    assert result.history["val_accuracy"][-1] > 0.5


def test_run_records_config_data_metrics_and_transform(trained):
    config, result = trained
    client = MlflowClient(config.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["train.epochs"] == "2" and run.data.params["train.num_proc"] == "2"
    params = run.data.params
    assert params["data.ingest.files_seen"] == "1797"  # counts are facts (params), not metric charts
    assert int(params["data.ingest.rows_written"]) + int(params["data.ingest.rows_quarantined"]) == 1797
    assert not [key for key in run.data.metrics if key.startswith(("ingest.", "data."))]
    assert run.info.run_name.startswith("image_cnn-demo-")
    tags = run.data.tags
    assert tags["dlfusion.pipeline"] == "image_cnn" and tags["dlfusion.horovod_size"] == "2"
    assert len(tags["dlfusion.git_commit"]) == 40 or tags["dlfusion.git_commit"] == "unknown"
    assert len(tags["dlfusion.data_digest"]) == 16 and "dlfusion.spark_master" in tags
    assert "system/cpu_utilization_percentage" in run.data.metrics  # MLflow's monitor, on the driver
    assert "plots/learning_curves.png" in {a.path for a in client.list_artifacts(result.run_id, "plots")}
    history = client.get_metric_history(result.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [1, 2]  # per epoch, logged once (rank 0 only)
    stalls = client.get_metric_history(result.run_id, "input_stall")  # averaged over the ranks
    assert sorted(m.step for m in stalls) == [1, 2] and all(0 <= m.value < 1 for m in stalls)
    inputs = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    report = atomic.read_json(Catalog.for_workdir(config.workdir).preprocess_report)
    assert inputs["image_cnn-train"].digest == report["splits"]["train"]["digest"]
    logged = {a.path for a in client.list_artifacts(result.run_id, "transform")}
    assert logged == {"transform/transform.json", "transform/label_map.json"}
    # The data profile beside the dataset inputs: the one preprocess wrote, and its chart.
    assert {a.path for a in client.list_artifacts(result.run_id, "data")} == {
        "data/profile.json",
        "data/class_balance.png",
        "data/snapshot.parquet",
    }
    mlflow.set_tracking_uri(config.tracking_uri)
    # The snapshot the splits came from: every file ingested, listed from the run itself.
    snapshot = pq.read_table(
        mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/data/snapshot.parquet")
    )
    assert snapshot.num_rows == 1797 and {"relpath", "size", "mtime", "part"} <= set(snapshot.column_names)
    tagged = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    assert tagged["image_cnn-train"]["dlfusion.snapshot"] == f"i{report['snapshot']['number']:05d}"
    profile = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/data/profile.json")
    assert profile == atomic.read_json(Catalog.for_workdir(config.workdir).profile)
    assert sum(profile["classes"].values()) == 1797 and "dlfusion.validation.warnings" not in tags
    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 1  # one run per pipeline run, not one per rank


def test_logged_model_predicts_probabilities_from_raw_uint8_images(trained):
    config, result = trained
    catalog = Catalog.for_workdir(config.workdir)
    transform = load_transform(catalog.transform)
    mlflow.set_tracking_uri(config.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)

    test = pq.read_table(str(catalog.split("test"))).to_pandas()
    images = transform.to_images(list(test["pixels"]))
    probabilities = np.asarray(model.predict(images))
    assert probabilities.shape == (len(test), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    labels = class_indices(test["label"], transform.class_names)
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.5
    with pytest.raises(MlflowException, match="[Ss]hape"):  # the signature rejects other shapes
        model.predict(np.zeros((1, 5, 5, 3), np.uint8))


def test_evaluate_logs_test_metrics_to_the_same_run(trained, spark):
    config, result = trained
    metrics = evaluation.run(config, lambda: spark)
    run = MlflowClient(config.tracking_uri).get_run(result.run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert {"test_macro_precision", "test_macro_recall", "test_macro_f1"} <= set(run.data.metrics)
    assert not [key for key in run.data.metrics if key.startswith("test_f1.")]  # per class: the table
    test_rows = atomic.read_json(Catalog.for_workdir(config.workdir).preprocess_report)["splits"]["test"][
        "rows"
    ]
    assert metrics["test_rows"] == test_rows
    artifacts = {
        a.path for a in MlflowClient(config.tracking_uri).list_artifacts(result.run_id, "evaluation")
    }
    assert {"evaluation/confusion_matrix.png", "evaluation/per_class.csv"} <= artifacts
    table = mlflow.artifacts.load_text(f"runs:/{result.run_id}/evaluation/per_class.csv").splitlines()
    assert table[0] == "class,precision,recall,f1,support" and len(table) == 11


def test_evaluate_on_the_local_ranks_scores_the_test_split_as_spark_does(trained, spark):
    config, result = trained

    with launchers.RankPool(config.train) as pool:
        on_ranks = evaluation.run(config, spark_must_not_start("an evaluation on the ranks"), pool=pool)
        ranks = pool.get()
    assert on_ranks == evaluation.run(config, lambda: spark)
    assert [process.returncode for process in ranks._ranks] == [0, 0]  # the pool ended them


def test_score_predicts_a_new_folder_in_one_pass_and_quarantines_a_bad_file(trained, tmp_path):
    import shutil

    from pipelines import cli
    from pipelines.kinds.image_cnn.ingest import decode_image

    config, result = trained
    raw = config.workdir / "raw" / "digits"
    new = tmp_path / "new"
    (new / "nested").mkdir(parents=True)
    picked = {}  # scoring key -> true class
    for digit in ("3", "7"):
        for index, image in enumerate(sorted((raw / digit).iterdir())[:6]):
            key = f"{digit}_{image.name}" if index % 2 else f"nested/{digit}_{image.name}"
            shutil.copy(image, new / key)
            picked[key] = digit
    (new / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (new / ".hidden.png").write_bytes(b"ignored, as ingest ignores it")
    output, summary = tmp_path / "scores", tmp_path / "summary.json"

    code = cli.main(
        [
            "score",
            str(IMAGE_CONFIG),
            f"workdir={config.workdir}",
            "spark.master=local[2]",
            f"model_uri={result.model_uri}",
            f"data.source={new}",
            f"output={output}",
            "--summary-json",
            str(summary),
        ]
    )

    assert code == 0
    report = json.loads(summary.read_text())["score"]
    assert (report["inputs"], report["scored"], report["quarantined"]) == (13, 12, 1)
    # Drift against the training data's profile: the same kind of images (8x8 greyscale), but
    # only two of the ten classes predicted.
    assert report["drift"]["shapes"] == 0 and report["drift"]["classes"] > 1
    logged = MlflowClient(config.tracking_uri).get_run(result.run_id).data.metrics
    assert logged["score_class_drift"] == pytest.approx(report["drift"]["classes"])
    quarantined = pq.read_table(str(output / "quarantine")).to_pylist()
    assert [row["key"] for row in quarantined] == ["broken.jpg"]
    assert quarantined[0]["reason"].startswith("cannot decode image")
    scored = pq.read_table(str(output / "predictions")).to_pandas().set_index("key").loc[sorted(picked)]
    probabilities = np.array([[dict(p)[str(c)] for c in range(10)] for p in scored["probabilities"]])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (scored["prediction"] == pd.Series(picked)[scored.index]).mean() > 0.5
    assert (scored["confidence"] == probabilities.max(axis=1)).all()
    # The model in the Spark tasks and the model loaded here give the same probabilities.
    size = load_transform(Catalog.for_workdir(config.workdir).transform).image_size
    images = np.stack(
        [np.frombuffer(decode_image((new / key).read_bytes(), size), np.uint8) for key in sorted(picked)]
    ).reshape(-1, size, size, 3)
    mlflow.set_tracking_uri(config.tracking_uri)
    expected = np.asarray(mlflow.pyfunc.load_model(result.model_uri).predict(images))
    assert np.allclose(probabilities, expected, atol=1e-5)


def test_resume_continues_from_the_checkpoint(trainable_workdir, spark, ranks):
    first = driver.run(image_config(trainable_workdir, "train.epochs=1"), ranks)
    catalog = Catalog.for_workdir(trainable_workdir)
    with np.load(catalog.checkpoint(first.run_id)) as saved:
        assert int(saved["__epoch__"]) == 1

    config = image_config(trainable_workdir, "train.epochs=2", "train.resume=true")
    resumed = driver.run(config, ranks)
    assert resumed.run_id == first.run_id and resumed.initial_epoch == 1
    assert len(resumed.history["loss"]) == 1  # only the missing epoch ran
    assert resumed.rank_digests[0] == resumed.rank_digests[1]
    with np.load(catalog.checkpoint(first.run_id)) as saved:
        assert int(saved["__epoch__"]) == 2
        iterations = [saved[k] for k in saved.files if k.endswith("/iteration")]
    steps = loader.plan_shards(catalog.split("train"), 2, 32).steps_per_epoch
    assert int(iterations[0]) == 2 * steps  # optimizer state was restored, not restarted
    history = MlflowClient(config.tracking_uri).get_metric_history(first.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]


def test_spark_launcher_trains_on_executors(trainable_workdir, spark):
    config = image_config(trainable_workdir, "train.epochs=1", "train.launcher=spark")
    result = driver.run(config)
    assert result.rank_digests[0] == result.rank_digests[1]
    assert (
        atomic.read_json(Catalog.for_workdir(config.workdir).latest_run("image_cnn"))["run_id"]
        == result.run_id
    )


def test_a_failing_rank_reports_its_own_exception(trainable_workdir, spark):
    catalog = Catalog.for_workdir(trainable_workdir)
    transform = json.loads(catalog.transform.read_text())
    transform["image_size"] = 16  # disagrees with the 32x32 pixels in the data: decoding fails
    catalog.transform.write_text(json.dumps(transform))
    config = image_config(trainable_workdir, "train.epochs=1", "train.stall_timeout_s=30")
    started = time.monotonic()
    with pytest.raises(TrainingError) as caught:
        driver.run(config)
    # Bounded (the stall timeout plus start-up, slower on a loaded machine), not a hang.
    assert time.monotonic() - started < 150
    assert caught.value.rank in (0, 1)
    # The loader's own words, out of TensorFlow's wrapping: which split, and what is wrong with it.
    assert "train.parquet: a row holds 3072 bytes of features, not 768" in caught.value.detail
    run_id = json.loads(catalog.latest_run("image_cnn").read_text())["run_id"]
    assert MlflowClient(config.tracking_uri).get_run(run_id).info.status == "FAILED"


def test_init_from_a_run_starts_from_its_weights_and_from_scratch_when_the_classes_changed(
    trained, tmp_path, ranks, caplog
):
    import dataclasses
    import shutil

    import keras

    from pipelines.preprocess.transforms import save_transform

    config, result = trained
    shutil.copytree(config.workdir, tmp_path / "work")  # the module's other tests keep their latest run
    catalog = Catalog.for_workdir(tmp_path / "work")
    # A learning rate of 1e-12 barely moves the weights: the model ends where it started.
    tuned = driver.run(
        image_config(
            tmp_path / "work",
            "train.epochs=1",
            "train.learning_rate=1e-12",
            f"train.init_from={result.run_id}",
        ),
        ranks,
    )
    started = keras.models.load_model(Catalog.for_workdir(config.workdir).trained_model(result.run_id))
    ended = keras.models.load_model(catalog.trained_model(tuned.run_id))
    assert all(
        np.allclose(a, b, atol=1e-6) for a, b in zip(started.get_weights(), ended.get_weights(), strict=True)
    )
    tags = MlflowClient(image_config(tmp_path / "work").tracking_uri).get_run(tuned.run_id).data.tags
    assert tags["dlfusion.init_from"] == f"runs:/{result.run_id}/model"

    transform = load_transform(catalog.transform)
    save_transform(
        dataclasses.replace(transform, class_names=[*transform.class_names, "x"]), catalog.transform
    )
    changed = image_config(tmp_path / "work", f"train.init_from={result.run_id}")
    with caplog.at_level("WARNING"):
        assert driver.initial_weights(changed, catalog, "next") is None
    assert "train.init_from: the classes changed since runs:/" in caplog.text
    assert "(10 then, 11 now): training from scratch" in caplog.text
    with pytest.raises(Exception, match="train.init_from: champion needs mlflow.registered_model"):
        driver.initial_weights(image_config(tmp_path / "work", "train.init_from=champion"), catalog, "next")


def test_mixed_bfloat16_computes_in_bfloat16_on_the_ranks_and_serves_float32(trained, tmp_path, ranks):
    import shutil

    import keras

    config, result = trained
    assert result.compute_dtypes == ["float32"]
    shutil.copytree(config.workdir, tmp_path / "work")
    mixed = image_config(tmp_path / "work", "train.epochs=1", "train.precision=mixed_bfloat16")
    outcome = driver.run(mixed, ranks)
    assert outcome.compute_dtypes == ["bfloat16", "float32"]  # the output layer stays float32

    saved = keras.saving.load_model(Catalog.for_workdir(mixed.workdir).trained_model(outcome.run_id))
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    catalog = Catalog.for_workdir(mixed.workdir)
    transform = load_transform(catalog.transform)
    test = pq.read_table(str(catalog.split("test"))).to_pandas()
    mlflow.set_tracking_uri(mixed.tracking_uri)
    probabilities = np.asarray(
        mlflow.pyfunc.load_model(outcome.model_uri).predict(transform.to_images(list(test["pixels"])))
    )
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    labels = class_indices(test["label"], transform.class_names)
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.5


def test_mixed_float16_averages_the_scaled_gradients_before_the_loss_scale_decides():
    import keras

    from pipelines.train import horovod_keras as hk

    optimizer = hk.optimizer(keras.optimizers.Adam, "mixed_float16", learning_rate=1e-3)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert type(optimizer).__name__ == "DistributedLossScaleOptimizer"  # its apply averages first
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.Adam)
    plain = hk.optimizer(keras.optimizers.Adam, "mixed_bfloat16", learning_rate=1e-3)
    assert type(plain).__name__ == "DistributedAdam"  # bfloat16 needs no loss scaling
