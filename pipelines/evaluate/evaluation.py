"""Evaluate stage: the kind's own test evaluation of a trained model, logged to the training's MLflow run."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.kinds import kind_of
from pipelines.track import runs

if TYPE_CHECKING:
    from pipelines.train.launchers import RankPool

log = logging.getLogger(__name__)


def run(
    config: PipelineConfig,
    start_spark: Callable[[], SparkSession],
    run_id: str | None = None,
    pool: RankPool | None = None,
) -> dict[str, float]:
    """Evaluate the model of ``run_id`` (default: this kind's latest training) on the test split.
    ``start_spark()`` returns the SparkSession, starting it on the first call.

    With a local Spark master, Spark's tasks would run on this machine too: the test split is then
    scored on ``pool``'s local ranks, which have TensorFlow already when training just used them
    (and a kind that needs no Spark for it never starts it)."""
    kind = kind_of(config)
    catalog = Catalog.for_workdir(config.workdir)
    run_id = run_id or runs.trained_run_id(config)
    ranks = pool.for_scoring(config.spark) if pool is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        model_uri = f"runs:/{run_id}/model"
        metrics = kind.part("evaluate")(config, start_spark, model_uri, catalog, Path(tmp), ranks=ranks)
        runs.log_evaluation(config.tracking_uri, run_id, metrics, Path(tmp))
    log.info("evaluate: %s %.4f", kind.primary_metric, metrics[kind.primary_metric])
    return metrics
