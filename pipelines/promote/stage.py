"""The promote stage: register the latest training's model; the champion gate's decision."""

from __future__ import annotations

from functools import partial

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.promote import promotion
from pipelines.runtime.spark import get_spark


def run(config: PipelineConfig, override_gate: bool = False) -> StageResult:
    """Register the model and move the champion alias if it wins (always, with ``override_gate``)."""
    decision = promotion.run(config, partial(get_spark, config.spark), override_gate=override_gate)
    model, version = decision["model"], decision["version"]
    line = f"promotion: {model} version {version} {decision['decision']} ({decision['reason']})"
    return StageResult({"promotion": decision}, (line,))
