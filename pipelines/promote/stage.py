"""The promote stage: register the latest training's model; the champion gate's decision."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.promote import promotion
from pipelines.runtime.spark import get_spark

if TYPE_CHECKING:
    from pipelines.train.launchers import RankPool


def run(config: PipelineConfig, override_gate: bool = False, pool: RankPool | None = None) -> StageResult:
    """Register the model and move the champion alias if it wins (always, with ``override_gate``);
    the models are scored on ``pool``'s ranks when given."""
    start_spark = partial(get_spark, config.spark)
    decision = promotion.run(config, start_spark, override_gate=override_gate, pool=pool)
    model, version = decision["model"], decision["version"]
    line = f"promotion: {model} version {version} {decision['decision']} ({decision['reason']})"
    return StageResult({"promotion": decision}, (line,))
