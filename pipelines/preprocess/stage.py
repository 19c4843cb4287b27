"""The preprocess stage: the kind's preprocess part (splits and the fitted transform)."""

from __future__ import annotations

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.kinds import kind_of
from pipelines.runtime.spark import get_spark


def run(config: PipelineConfig) -> StageResult:
    """Split the ingested data, fit the transform on train, write one Parquet data set per split."""
    report = kind_of(config).part("preprocess")(config, get_spark(config.spark))
    splits = {name: split["rows"] for name, split in report["splits"].items()}
    summary = {
        "splits": splits,
        "preprocess": {"seconds": report["seconds"], "spark_jobs": report["spark_jobs"]},
    }
    return StageResult(summary, ("rows per split: " + ", ".join(f"{k}={v}" for k, v in splits.items()),))
