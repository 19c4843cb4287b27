"""The text classifier's evaluation: the shared classifier metrics and majority baseline, and a
bag-of-words linear model trained with Spark MLlib on the same splits, so that a user sees at a
glance whether the LSTM earns its cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.kinds.classifier import evaluation
from pipelines.kinds.text_lstm.config import TextPipelineConfig
from pipelines.kinds.text_lstm.preprocess import tokenize_texts

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pipelines.core.catalog import Catalog
    from pipelines.runtime.local_ranks import LocalRanks


def bag_of_words_baseline(
    config: TextPipelineConfig, spark: SparkSession, catalog: Catalog
) -> dict[str, float]:
    """Word counts (the served model's tokenizer, ``preprocess.vocab_size`` words) and a multinomial
    logistic regression, fitted on the train split with MLlib and scored on the test split:
    ``test_bow_accuracy`` and ``test_bow_macro_f1``."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import CountVectorizer

    from pipelines.preprocess.transforms import load_transform

    class_names = load_transform(catalog.transform).class_names

    def words(split: str):
        rows = spark.read.parquet(str(catalog.split(split))).select("text", "label")
        return tokenize_texts(rows, config.preprocess)

    model = Pipeline(
        stages=[
            CountVectorizer(
                inputCol="words", outputCol="counts", vocabSize=config.preprocess.vocab_size, minDF=2
            ),
            LogisticRegression(featuresCol="counts", labelCol="label", maxIter=50, regParam=0.01),
        ]
    ).fit(words("train"))
    counted = model.transform(words("test")).groupBy("label", "prediction").count().collect()
    pairs = [(row["label"], int(row["prediction"]), row["count"]) for row in counted]
    metrics = evaluation.classification_metrics(
        evaluation.confusion_matrix(pairs, len(class_names)), class_names
    )
    return {"test_bow_accuracy": metrics["test_accuracy"], "test_bow_macro_f1": metrics["test_macro_f1"]}


def evaluate(
    config: TextPipelineConfig,
    start_spark: Callable[[], SparkSession],
    model_uri: str,
    catalog: Catalog,
    artifacts: Path,
    ranks: LocalRanks | None = None,
) -> dict[str, float]:
    """The classifier metrics of the logged model, its majority baseline, and the bag-of-words
    baseline with the model's lift over it (``test_macro_f1_lift_over_bow``)."""
    metrics = evaluation.evaluate(config, start_spark, model_uri, catalog, artifacts, ranks)
    metrics.update(bag_of_words_baseline(config, start_spark(), catalog))
    metrics["test_macro_f1_lift_over_bow"] = metrics["test_macro_f1"] - metrics["test_bow_macro_f1"]
    return metrics
