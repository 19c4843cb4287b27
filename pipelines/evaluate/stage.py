"""The evaluate stage: the test metrics of the latest training, and its kind's primary metric."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from pipelines.core.config import PipelineConfig
from pipelines.core.stages import StageResult
from pipelines.evaluate import evaluation
from pipelines.kinds import kind_of
from pipelines.runtime.spark import get_spark

if TYPE_CHECKING:
    from pipelines.train.launchers import RankPool


def run(config: PipelineConfig, pool: RankPool | None = None) -> StageResult:
    """Evaluate the latest training's model on the test split (on ``pool``'s ranks when given)."""
    kind = kind_of(config)
    primary = kind.primary_metric
    metrics = evaluation.run(config, partial(get_spark, config.spark), pool=pool)
    summary = {"test_metrics": metrics, "primary_metric": {primary: metrics[primary]}}
    lines = [f"{primary} {metrics[primary]:.4f}"]
    for model, baseline in ((kind.baseline,) if kind.baseline else ()) + kind.comparisons:
        lines.append(
            f"{model} {metrics[model]:.4f} against the baseline's {metrics[baseline]:.4f} ({baseline})"
        )
    return StageResult(summary, tuple(lines))
