"""The train stage: ``driver.run``'s result as the stage's summary."""

from __future__ import annotations

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.train import driver
from pipelines.train.launchers import RankPool


def run(config: PipelineConfig, pool: RankPool | None = None) -> StageResult:
    """Train on the ranks (``pool``'s when given) and log the model; the last epoch's metrics."""
    result = driver.run(config, pool)
    final = {key: values[-1] for key, values in result.history.items() if values}
    summary = {"run_id": result.run_id, "model_uri": result.model_uri, "final_epoch_metrics": final}
    if result.timing:
        summary["train_timing"] = result.timing
    if result.early_stopping:
        summary["early_stopping"] = result.early_stopping
    if result.compute_dtypes:
        summary["compute_dtypes"] = result.compute_dtypes
    return StageResult(summary, (f"MLflow run {result.run_id}",))
