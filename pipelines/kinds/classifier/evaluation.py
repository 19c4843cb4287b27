"""A classifier's test evaluation: accuracy, per-class metrics and the confusion matrix, scored
by Spark tasks or by the local ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.io import atomic
from pipelines.preprocess.transforms import class_indices
from pipelines.track import pyfunc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.core.catalog import Catalog
    from pipelines.core.config import PipelineConfig
    from pipelines.preprocess.transforms import Transform
    from pipelines.runtime.local_ranks import LocalRanks


def predict_split(df: DataFrame, model_uri: str, tracking_uri: str, transform: Transform) -> DataFrame:
    """Score rows of a split with the logged model, in Spark: adds ``prediction`` and ``confidence``.

    The model gets the same raw input a user would give it (images, or text); it is loaded once
    per partition on the executors, from its files (``pyfunc.model_files``, resolved here), and
    only plain strings and the transform cross to them.
    """
    files = pyfunc.model_files(model_uri, tracking_uri)

    def predict_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pipelines.runtime.logs import quiet_library_warnings

        quiet_library_warnings()
        model = pyfunc.load_model(files, tracking_uri)
        for batch in batches:
            if batch.empty:
                continue
            probabilities = np.asarray(model.predict(transform.model_input(batch)))
            yield pd.DataFrame(
                {
                    "label": class_indices(batch["label"], transform.class_names),
                    "prediction": probabilities.argmax(axis=1).astype(np.int32),
                    "confidence": probabilities.max(axis=1).astype(np.float64),
                }
            )

    schema = "label int, prediction int, confidence double"
    return df.mapInPandas(predict_partition, schema)


def confusion_matrix(pairs: list[tuple[int, int, int]], num_classes: int) -> np.ndarray:
    """(label, prediction, count) triples -> matrix[label, prediction] of counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for label, prediction, count in pairs:
        matrix[label, prediction] += count
    return matrix


def per_class_table(matrix: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    rows = []
    for index, name in enumerate(class_names):
        true_positive = matrix[index, index]
        predicted, actual = matrix[:, index].sum(), matrix[index, :].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "class": name,
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "support": int(actual),
            }
        )
    return rows


def classification_metrics(matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 (per class: ``per_class_table``)."""
    total = matrix.sum()
    table = per_class_table(matrix, class_names)
    return {
        "test_accuracy": float(np.trace(matrix) / total) if total else 0.0,
        **{
            f"test_macro_{key}": float(np.mean([row[key] for row in table]))
            for key in ("precision", "recall", "f1")
        },
    }


def majority_baseline(matrix: np.ndarray, train_label_counts: list[int], class_names: list[str]) -> dict:
    """The metrics of always predicting the train split's most frequent class, on the test rows of
    ``matrix`` (the same rows the model was scored on)."""
    constant = np.zeros_like(matrix)
    constant[:, int(np.argmax(train_label_counts))] = matrix.sum(axis=1)
    metrics = classification_metrics(constant, class_names)
    return {
        "test_majority_accuracy": metrics["test_accuracy"],
        "test_majority_macro_f1": metrics["test_macro_f1"],
    }


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    from pipelines.track.plots import figure

    fig = figure(figsize=(1 + 0.6 * len(class_names), 1 + 0.6 * len(class_names)))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def score_shard(
    files: str, split: str, transform: Transform, tracking_uri: str
) -> list[tuple[int, int, int]]:
    """On one of the local ranks: score its share of the split's row groups with the logged model
    (loaded from its ``files``, as ``predict_split``'s tasks do); (label, prediction, count) triples."""
    import os
    from collections import Counter

    from pipelines.io import parquet

    model = pyfunc.load_model(files, tracking_uri)
    counts: Counter = Counter()
    shard, shards = int(os.environ["HOROVOD_RANK"]), int(os.environ["HOROVOD_SIZE"])
    for group in parquet.row_groups(split, shard, shards):
        rows = group.to_pandas()
        probabilities = np.asarray(model.predict(transform.model_input(rows)))
        labels = class_indices(rows["label"], transform.class_names).tolist()
        counts.update(zip(labels, probabilities.argmax(axis=1).tolist(), strict=True))
    return [(label, prediction, count) for (label, prediction), count in counts.items()]


def evaluate(
    config: PipelineConfig,
    start_spark: Callable[[], SparkSession],
    model_uri: str,
    catalog: Catalog,
    artifacts: Path,
    ranks: LocalRanks | None = None,
) -> dict[str, float]:
    """Score the test split, on ``ranks`` when given (they have TensorFlow already) or in Spark:
    accuracy and macro averages; the confusion matrix and per-class table into ``artifacts``."""
    import json

    from pipelines.preprocess.transforms import load_transform
    from pipelines.runtime.spark import size_batches

    transform = load_transform(catalog.transform)
    if ranks is not None:  # processes that have TensorFlow already
        files = pyfunc.model_files(model_uri, config.tracking_uri)
        shards = ranks.run(score_shard, (files, str(catalog.split("test")), transform, config.tracking_uri))
        pairs = [pair for shard in shards for pair in shard]
    else:
        spark = start_spark()
        size_batches(spark, int(np.prod(transform.feature_shape)) * 4 + 400)
        test = spark.read.parquet(str(catalog.split("test")))
        scored = predict_split(test, model_uri, config.tracking_uri, transform)
        counted = scored.groupBy("label", "prediction").count().collect()
        pairs = [(r["label"], r["prediction"], r["count"]) for r in counted]
    matrix = confusion_matrix(pairs, len(transform.class_names))
    metrics = classification_metrics(matrix, transform.class_names)
    train_counts = atomic.read_json(catalog.preprocess_report)["splits"]["train"]["label_counts"]
    metrics.update(majority_baseline(matrix, train_counts, transform.class_names))
    metrics["test_macro_f1_lift"] = metrics["test_macro_f1"] - metrics["test_majority_macro_f1"]
    metrics["test_rows"] = float(matrix.sum())
    plot_confusion(matrix, transform.class_names, artifacts / "confusion_matrix.png")
    # Per class as a table, not as metrics: the metrics page stays readable with many classes.
    pd.DataFrame(per_class_table(matrix, transform.class_names)).to_csv(
        artifacts / "per_class.csv", index=False
    )
    (artifacts / "confusion_matrix.json").write_text(
        json.dumps({"class_names": transform.class_names, "matrix": matrix.tolist()})
    )
    return metrics
