"""The score stage: new raw data -> the predictions of a logged model."""

from __future__ import annotations

from dataclasses import asdict

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.runtime.spark import get_spark
from pipelines.score import scoring


def run(config: PipelineConfig) -> StageResult:
    """Score ``data.source``: every input is scored or quarantined."""
    report = scoring.run(config, get_spark(config.spark))
    lines = (
        f"inputs {report.inputs} = scored {report.scored} + quarantined {report.quarantined}",
        f"predictions: {report.output}/predictions  (model {report.model_uri})",
    )
    return StageResult({"score": asdict(report)}, lines)
