"""Evaluate stage: the kind's own test evaluation of a trained model, logged to the training's MLflow run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from pipelines import tracking
from pipelines.catalog import Catalog
from pipelines.config import PipelineConfig
from pipelines.errors import DataError
from pipelines.kinds import kind_of

if TYPE_CHECKING:
    from pipelines.training import RankPool

log = logging.getLogger(__name__)


def latest_run_id(config: PipelineConfig) -> str:
    """The MLflow run of this kind's latest training in the workdir.

    Raises:
        DataError: when nothing was trained here yet.
    """
    run_id = tracking.latest_run_id(config)
    if run_id is None:
        latest = Catalog.for_workdir(config.workdir).latest_run(config.pipeline)
        raise DataError(str(latest), "no trained model: run the train stage first")
    return run_id


def run(
    config: PipelineConfig, spark: SparkSession, run_id: str | None = None, pool: RankPool | None = None
) -> dict[str, float]:
    """Evaluate the model of ``run_id`` (default: this kind's latest training) on the test split.

    With a local Spark master, Spark's tasks would run on this machine too: the test split is then
    scored on ``pool``'s local ranks, which have TensorFlow already when training just used them."""
    kind = kind_of(config)
    catalog = Catalog.for_workdir(config.workdir)
    run_id = run_id or latest_run_id(config)
    ranks = pool.get() if pool is not None and spark.sparkContext.master.startswith("local") else None
    with tempfile.TemporaryDirectory() as tmp:
        model_uri = f"runs:/{run_id}/model"
        metrics = kind.part("evaluate")(config, spark, model_uri, catalog, Path(tmp), ranks=ranks)
        tracking.log_evaluation(config.tracking_uri, run_id, metrics, Path(tmp))
    log.info("evaluate: %s %.4f", kind.primary_metric, metrics[kind.primary_metric])
    return metrics
