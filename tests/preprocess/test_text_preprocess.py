"""Text preprocess: one tokenizer, vocabulary fitted on train only, exact padding and truncation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pyspark.sql import functions as F

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.io import atomic, spark_writes
from pipelines.kinds.text_lstm import preprocess as text_preprocess
from pipelines.kinds.text_lstm.schemas import TEXT_RECORDS, TEXT_SPLIT
from pipelines.kinds.text_lstm.transform import OOV_ID, PAD_ID, TextTransform, tokenize
from pipelines.preprocess import splits
from pipelines.preprocess.transforms import load_transform
from tests.conftest import text_config


def test_tokenize_unescapes_html_strips_tags_and_lowercases():
    text = "It&#039;s GREAT &amp; fun!<br /><br />Don't miss it."
    assert tokenize(text) == ["it's", "great", "fun", "don't", "miss", "it"]
    assert tokenize(text, lowercase=False, html_unescape=False)[:3] == ["It", "039", "s"]
    assert tokenize(None) == [] and tokenize("") == []


@pytest.mark.parametrize("length", [0, 1, 4, 5, 6, 12])
def test_padding_and_truncation_at_the_edges(length):
    transform = TextTransform(["<pad>", "<oov>", "good", "bad"], ["negative", "positive"], max_len=5)
    tokens = (["good", "bad", "unknown"] * 4)[:length]
    ids = transform.encode_tokens(tokens)
    assert ids.dtype == np.int32 and ids.shape == (5,)
    expected = [{"good": 2, "bad": 3}.get(t, OOV_ID) for t in tokens[:5]]
    assert ids.tolist() == expected + [PAD_ID] * (5 - len(expected))  # padded at the end, first 5 kept


def _records(spark, texts_and_labels):
    rows = [
        (hashlib.sha256(text.encode()).hexdigest(), "file:/reviews.tsv", text, label, None, None)
        for text, label in texts_and_labels
    ]
    return spark.createDataFrame(rows, TEXT_RECORDS)


def test_vocabulary_is_fitted_on_train_only(spark, tmp_path):
    config = text_config(tmp_path / "work", "preprocess.max_len=8")
    # Find texts whose hash puts them in the test split, each with a word nothing else has.
    candidates = [(f"zebra{i} plot is good", "positive") for i in range(400)]
    split = splits.assign_split(_records(spark, candidates), config.preprocess.split, key="key")
    by_split = {name: [r.text for r in split.where(F.col("split") == name).collect()] for name in SPLITS}
    test_only_word = by_split["test"][0].split()[0]
    train_word = by_split["train"][0].split()[0]

    ingested = _records(spark, candidates + [("the acting is awful", "negative")] * 50)
    spark_writes.write_parquet_atomically(ingested, Catalog.for_workdir(config.workdir).ingested)
    report = text_preprocess.run(config, lambda: spark)

    transform = load_transform(Catalog.for_workdir(config.workdir).transform)
    assert transform.vocabulary[:2] == ["<pad>", "<oov>"]
    assert train_word in transform.vocabulary
    assert test_only_word not in transform.vocabulary  # out of vocabulary: never seen in train
    assert transform.encode([f"{test_only_word} plot"])[0][0] == OOV_ID
    # Most frequent first: "plot", "is" appear in every train record.
    assert set(transform.vocabulary[2:5]) >= {"plot", "is"}
    assert sum(s["rows"] for s in report["splits"].values()) == 450


def test_vocab_size_caps_the_vocabulary_and_splits_hold_declared_ids(spark, tmp_path):
    # 21 texts, each under both labels: validation would stop them (validate.max_cross_label_fraction)
    config = text_config(
        tmp_path / "work", "preprocess.vocab_size=5", "preprocess.max_len=6", "validate.mode=warn"
    )
    texts = [
        (f"w{i % 7} w{i % 3} common words here", "positive" if i % 2 else "negative") for i in range(300)
    ]
    spark_writes.write_parquet_atomically(
        _records(spark, texts), Catalog.for_workdir(config.workdir).ingested
    )
    text_preprocess.run(config, lambda: spark)
    catalog = Catalog.for_workdir(config.workdir)
    transform = load_transform(catalog.transform)
    assert len(transform.vocabulary) == 5

    train = spark.read.parquet(str(catalog.split("train")))
    assert [(f.name, f.dataType) for f in train.schema] == [(f.name, f.dataType) for f in TEXT_SPLIT]
    for row in train.limit(20).collect():
        ids = np.frombuffer(row.tokens, dtype="<i4")
        assert ids.tolist() == transform.encode([row.text])[0].tolist()  # Spark path == serving path
    report = atomic.read_json(catalog.preprocess_report)
    positives = sum(
        split["label_counts"][transform.class_names.index("positive")] for split in report["splits"].values()
    )
    assert positives == 150  # labels were indexed by class name, none lost
