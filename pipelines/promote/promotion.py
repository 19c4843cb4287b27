"""Promote stage: register a run's model and move the registry alias ``champion`` only when it beats
the current champion on the kind's primary metric, both evaluated on the same test split."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.core.errors import ConfigError
from pipelines.kinds import Kind, kind_of
from pipelines.track import registry, runs

if TYPE_CHECKING:
    from pipelines.runtime.local_ranks import LocalRanks
    from pipelines.train.launchers import RankPool

log = logging.getLogger(__name__)


def margin(kind: Kind, new: float, champion: float) -> float:
    """How much better ``new`` is than ``champion`` on the kind's primary metric (negative: worse)."""
    return new - champion if kind.higher_is_better else champion - new


def _evaluated(
    config: PipelineConfig,
    start_spark: Callable[[], SparkSession],
    kind: Kind,
    model_uri: str,
    catalog: Catalog,
    ranks: LocalRanks | None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return kind.part("evaluate")(config, start_spark, model_uri, catalog, Path(tmp), ranks=ranks)


def below_baseline(kind: Kind, metrics: dict[str, float], required: float) -> str | None:
    """Why the model does not beat its kind's trivial baseline by ``required``; None when it does
    (or the kind has no baseline)."""
    if kind.baseline is None:
        return None
    model, baseline = kind.baseline
    lift = metrics[model] - metrics[baseline]
    if lift >= required:
        return None
    return (
        f"{model} {metrics[model]:.4f} beats {baseline} {metrics[baseline]:.4f} by {lift:.4f}"
        f" < promote.baseline_margin {required}"
    )


def run(
    config: PipelineConfig,
    start_spark: Callable[[], SparkSession],
    run_id: str | None = None,
    override_gate: bool = False,
    pool: RankPool | None = None,
) -> dict:
    """Register the run's model (default: this kind's latest training) and decide its promotion.
    ``start_spark()`` returns the SparkSession, starting it on the first call; both models are
    scored on ``pool``'s ranks instead of Spark tasks when Spark's would run on this machine too.

    The decision, both scores and the margin become tags of the run and of the version, and the
    returned summary. ``override_gate`` promotes whatever the scores, and is recorded.
    """
    kind = kind_of(config)
    name = config.mlflow.registered_model
    if not name:
        raise ConfigError(
            "mlflow.registered_model", "is required to promote (the registry name of the model)"
        )
    catalog = Catalog.for_workdir(config.workdir)
    run_id = run_id or runs.trained_run_id(config)
    uri = config.tracking_uri
    version = registry.registered_version(uri, name, run_id)
    champion = registry.champion_version(uri, name)

    ranks = pool.for_scoring(config.spark) if pool is not None else None
    metrics = _evaluated(config, start_spark, kind, f"models:/{name}/{version}", catalog, ranks)
    new_score = float(metrics[kind.primary_metric])
    champion_score = better_by = None
    if champion is not None and champion != version:
        champion_metrics = _evaluated(config, start_spark, kind, f"models:/{name}/{champion}", catalog, ranks)
        champion_score = float(champion_metrics[kind.primary_metric])
        better_by = margin(kind, new_score, champion_score)
    weak = below_baseline(kind, metrics, config.promote.baseline_margin)

    if champion is not None and champion == version:
        decision, reason = "kept", "already the champion"
    elif weak and override_gate:
        decision, reason = "forced", f"--override-gate although {weak}"
    elif weak:
        decision, reason = "kept", weak
    elif champion is None:
        decision, reason = "promoted", "no champion yet"
    elif better_by >= config.promote.min_delta:
        decision, reason = (
            "promoted",
            f"better by {better_by:.4f} >= promote.min_delta {config.promote.min_delta}",
        )
    elif override_gate:
        decision, reason = "forced", f"--override-gate although the margin is {better_by:.4f}"
    else:
        decision, reason = "kept", f"margin {better_by:.4f} < promote.min_delta {config.promote.min_delta}"
    if decision in ("promoted", "forced"):
        registry.make_champion(uri, name, version)

    result = {
        "decision": decision,
        "reason": reason,
        "metric": kind.primary_metric,
        "model": name,
        "version": version,
        "score": new_score,
        "champion_version": champion,
        "champion_score": champion_score,
        "margin": better_by,
        "forced": override_gate,
    }
    tags = {f"dlfusion.promotion.{key}": "" if value is None else str(value) for key, value in result.items()}
    registry.tag_run_and_version(uri, run_id, name, version, tags)
    log.info(
        "promote: %s version %s (%s %.4f; champion %s) -> %s: %s",
        name,
        version,
        kind.primary_metric,
        new_score,
        "none" if champion is None else f"v{champion} {champion_score if champion_score is not None else ''}",
        decision,
        reason,
    )
    return result
