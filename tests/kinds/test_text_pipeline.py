"""The text pipeline through the shared stages: real Spark, Horovod ranks and MLflow store."""

from __future__ import annotations

import hashlib

import keras
import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.core.catalog import Catalog
from pipelines.evaluate import evaluation
from pipelines.ingest import stage as ingest_stage
from pipelines.io import atomic
from pipelines.kinds.text_lstm.demo import write_reviews
from pipelines.preprocess import stage as preprocess_stage
from pipelines.preprocess.transforms import load_transform
from pipelines.train import driver
from tests.conftest import text_config
from tests.support.serving import served_predictions

pytestmark = pytest.mark.slow  # every test here uses a text model trained on Horovod ranks


@pytest.fixture(scope="module")
def trained_text(tmp_path_factory, spark, ranks):
    """3,000 generated reviews, ingested, preprocessed and trained for 5 epochs on 2 ranks."""
    root = tmp_path_factory.mktemp("text")
    reviews = write_reviews(root / "reviews.tsv", count=3000, seed=3)
    config = text_config(
        root / "work", f"data.source={reviews}", "train.epochs=5", "preprocess.rows_per_row_group=128"
    )
    summary = ingest_stage.run(config).summary
    preprocess_stage.run(config)
    return config, summary, driver.run(config, ranks)


def test_ingest_accounts_for_every_generated_review(trained_text):
    _, summary, _ = trained_text
    counts = summary["ingest"]
    assert counts["records_seen"] == 3000 == counts["rows_written"] + counts["rows_quarantined"]
    assert counts["rows_quarantined"] == 0 and counts["classes"] == 2


def test_ranks_agree_and_vocabulary_and_label_map_are_logged(trained_text):
    config, _, result = trained_text
    assert result.rank_digests[0] == result.rank_digests[1]
    client = MlflowClient(config.tracking_uri)
    logged = {a.path for a in client.list_artifacts(result.run_id, "transform")}
    assert {"transform/vocabulary.txt", "transform/label_map.json", "transform/transform.json"} <= logged
    assert client.get_run(result.run_id).data.params["pipeline"] == "text_lstm"


def test_pyfunc_predicts_from_raw_strings_like_the_training_time_path(trained_text):
    config, _, result = trained_text
    catalog = Catalog.for_workdir(config.workdir)
    transform = load_transform(catalog.transform)
    test = pq.read_table(str(catalog.split("test"))).to_pandas().head(64)

    mlflow.set_tracking_uri(config.tracking_uri)
    served = np.asarray(
        mlflow.pyfunc.load_model(result.model_uri).predict(pd.DataFrame({"text": test["text"]}))
    )
    # Training-time path: the ids Spark wrote, through the Keras model the ranks trained.
    ids = np.stack([np.frombuffer(raw, dtype="<i4") for raw in test["tokens"]])
    trained = keras.models.load_model(catalog.trained_model(result.run_id), compile=False)
    positive = trained.predict(ids, verbose=0)[:, 0]
    assert served.shape == (len(test), 2)
    assert np.allclose(served[:, 1], positive, atol=1e-5)

    # The same model served by MLflow's own server process, two raw texts posted as MLflow's JSON.
    texts = test["text"].head(2).tolist()
    over_http = served_predictions(
        result.model_uri, config.tracking_uri, {"dataframe_records": [{"text": t} for t in texts]}
    )
    assert np.allclose(over_http, served[:2], atol=1e-6)
    assert np.allclose(served.sum(axis=1), 1.0, atol=1e-5)
    assert transform.class_names == ["negative", "positive"]


def test_the_model_and_its_bag_of_words_baseline_beat_the_majority_class(trained_text, spark):
    config, _, result = trained_text
    metrics = evaluation.run(config, lambda: spark)
    counts = atomic.read_json(Catalog.for_workdir(config.workdir).preprocess_report)["splits"]["test"][
        "label_counts"
    ]
    baseline = max(counts) / sum(counts)
    assert metrics["test_accuracy"] > baseline + 0.1, (metrics["test_accuracy"], baseline)
    # The MLlib bag-of-words model learns the same words the LSTM does: far above the majority.
    assert baseline + 0.1 < metrics["test_bow_accuracy"] <= 1, (metrics["test_bow_accuracy"], baseline)
    assert metrics["test_macro_f1_lift_over_bow"] == metrics["test_macro_f1"] - metrics["test_bow_macro_f1"]
    logged = MlflowClient(config.tracking_uri).get_run(result.run_id).data.metrics
    assert logged["test_bow_macro_f1"] == pytest.approx(metrics["test_bow_macro_f1"])


def test_score_unlabelled_text_files_in_one_pass_and_quarantine_bad_records(trained_text, tmp_path, spark):
    from pipelines.score import scoring

    config, _, result = trained_text
    texts = ["A wonderful, moving film.", "Dull &amp; predictable, a waste of time.", "It was fine."]
    new = tmp_path / "new"
    (new / "day2").mkdir(parents=True)
    (new / "day1.tsv").write_text("id\treview\n1\t" + "\n2\t".join(texts[:2]) + "\n3\t   \n")
    (new / "day2" / "part.tsv").write_text(f"id\treview\n4\t{texts[2]}\n5\tone\ttoo many\n")
    scored_config = config.model_copy(
        update={
            "data": config.data.model_copy(update={"source": str(new)}),
            "score": config.score.model_copy(
                update={"model_uri": result.model_uri, "output": str(tmp_path / "out")}
            ),
        }
    )

    report = scoring.run(scored_config, spark)

    assert (report.inputs, report.scored, report.quarantined) == (5, 3, 2)
    reasons = sorted(row["reason"] for row in pq.read_table(str(tmp_path / "out" / "quarantine")).to_pylist())
    assert reasons == ["empty text", "expected 2 fields, found 3"]
    scored = pq.read_table(str(tmp_path / "out" / "predictions")).to_pandas()
    by_text = {}
    for row in scored.itertuples():
        probabilities = dict(row.probabilities)
        by_text[texts[[hashlib.sha256(t.encode()).hexdigest() for t in texts].index(row.key)]] = (
            [probabilities["negative"], probabilities["positive"]],
            row.prediction,
        )
    mlflow.set_tracking_uri(config.tracking_uri)
    expected = np.asarray(mlflow.pyfunc.load_model(result.model_uri).predict(pd.DataFrame({"text": texts})))
    assert np.allclose([by_text[t][0] for t in texts], expected, atol=1e-5)
    assert [by_text[t][1] for t in texts] == [["negative", "positive"][i] for i in expected.argmax(axis=1)]


def test_a_bag_of_frozen_pretrained_vectors_trains_and_keeps_them_aligned_to_the_vocabulary(
    trained_text, tmp_path, ranks
):
    """``model.architecture=bag`` from a vectors file written here: each vocabulary word found gets
    its vector (frozen), the others a random start; the model still learns the sentiment."""
    import shutil

    config, _, _ = trained_text
    shutil.copytree(config.workdir, tmp_path / "work")
    transform = load_transform(Catalog.for_workdir(tmp_path / "work").transform)
    from pipelines.kinds.text_lstm.demo import _NEGATIVE, _POSITIVE

    rng = np.random.default_rng(0)
    words = transform.vocabulary[2:200]  # not the padding and out-of-vocabulary ids
    vectors = {word: rng.normal(0, 0.3, size=8).round(4) for word in words}
    for word in vectors:  # vectors that know the sentiment words, as pre-trained ones would
        vectors[word][0] = 1.0 if word in _POSITIVE else -1.0 if word in _NEGATIVE else 0.0
    lines = [f"{len(vectors) + 1} 8", "nonsense 1 2 3 4 5 6 7 8"]  # word2vec's header; an unknown word
    lines += [" ".join([word, *map(str, vector)]) for word, vector in vectors.items()]
    (tmp_path / "vectors.txt").write_text("\n".join(lines) + "\n")
    bag = text_config(
        tmp_path / "work",
        f"data.source={config.data.source}",
        "train.epochs=3",
        "model.architecture=bag",
        "model.embedding_dim=8",
        f"model.embeddings={tmp_path / 'vectors.txt'}",
        "model.train_embeddings=false",
    )
    result = driver.run(bag, ranks)
    saved = keras.saving.load_model(Catalog.for_workdir(bag.workdir).trained_model(result.run_id))
    assert saved.name == "bag_classifier"
    table = saved.get_layer("embedding").get_weights()[0]
    index = {word: number for number, word in enumerate(transform.vocabulary)}
    assert all(np.allclose(table[index[word]], vector) for word, vector in vectors.items())
    assert not table[0].any()  # padding
    assert result.history["accuracy"][-1] > 0.7


def test_vectors_of_another_size_are_one_config_line(tmp_path):
    from pipelines.core.errors import ConfigError
    from pipelines.kinds.text_lstm.embeddings import aligned_vectors

    (tmp_path / "vectors.txt").write_text("good 0.1 0.2 0.3\n")
    matrix, found = aligned_vectors(str(tmp_path / "vectors.txt"), ["", "?", "good", "bad"], 3, seed=0)
    assert found == 1 and np.allclose(matrix[2], [0.1, 0.2, 0.3]) and not matrix[0].any()
    with pytest.raises(ConfigError, match=r"model.embeddings: .* has 3 numbers; model.embedding_dim is 4"):
        aligned_vectors(str(tmp_path / "vectors.txt"), ["", "?", "good"], 4, seed=0)
