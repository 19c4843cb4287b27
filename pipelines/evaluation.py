"""Evaluate stage: score the test split in Spark, log accuracy, per-class metrics and a confusion matrix."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from pyspark.sql import SparkSession

from pipelines import scoring, storage
from pipelines.catalog import Catalog
from pipelines.config import PipelineConfig
from pipelines.errors import DataError
from pipelines.spark import size_batches
from pipelines.transforms import load_transform

log = logging.getLogger(__name__)


def confusion_matrix(pairs: list[tuple[int, int, int]], num_classes: int) -> np.ndarray:
    """(label, prediction, count) triples -> matrix[label, prediction] of counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for label, prediction, count in pairs:
        matrix[label, prediction] += count
    return matrix


def classification_metrics(matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Accuracy and per-class precision, recall and F1 from a confusion matrix."""
    total = matrix.sum()
    metrics = {"test_accuracy": float(np.trace(matrix) / total) if total else 0.0}
    for index, name in enumerate(class_names):
        true_positive = matrix[index, index]
        predicted, actual = matrix[:, index].sum(), matrix[index, :].sum()
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        metrics.update(
            {
                f"test_precision.{name}": float(precision),
                f"test_recall.{name}": float(recall),
                f"test_f1.{name}": float(f1),
            }
        )
    return metrics


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(class_names), 1 + 0.6 * len(class_names)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(config: PipelineConfig, spark: SparkSession, run_id: str | None = None) -> dict[str, float]:
    """Evaluate the model of ``run_id`` (default: the latest training) on the test split."""
    import mlflow

    catalog = Catalog.for_workdir(config.workdir)
    if run_id is None:
        if not catalog.latest_run.is_file():
            raise DataError(str(catalog.latest_run), "no trained model: run the train stage first")
        run_id = storage.read_json(catalog.latest_run)["run_id"]
    transform = load_transform(catalog.transform)
    size_batches(spark, int(np.prod(transform.feature_shape)) * 4 + 400)
    test = spark.read.parquet(str(catalog.split("test")))
    scored = scoring.predict_split(test, f"runs:/{run_id}/model", config.tracking_uri, transform)
    pairs = scored.groupBy("label", "prediction").count().collect()
    matrix = confusion_matrix(
        [(r["label"], r["prediction"], r["count"]) for r in pairs], len(transform.class_names)
    )
    metrics = classification_metrics(matrix, transform.class_names)
    metrics["test_rows"] = float(matrix.sum())

    mlflow.set_tracking_uri(config.tracking_uri)
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_metrics(metrics)
        plot = Path(tmp) / "confusion_matrix.png"
        plot_confusion(matrix, transform.class_names, plot)
        mlflow.log_artifact(str(plot), "evaluation")
        mlflow.log_dict(
            {"class_names": transform.class_names, "matrix": matrix.tolist()},
            "evaluation/confusion_matrix.json",
        )
    log.info("evaluate: test accuracy %.4f on %d rows", metrics["test_accuracy"], matrix.sum())
    return metrics
