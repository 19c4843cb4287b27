"""The stages as one story: ingest -> preprocess -> train -> evaluate, each also callable alone.

Every stage takes the config's kind (``pipelines.kinds``) and calls that kind's part. A stage whose
inputs and config did not change since its last success is skipped (``pipelines.pipeline.freshness``).
"""

from __future__ import annotations

import logging
import pkgutil
import time
from collections.abc import Callable

from pipelines.core import stages as stage_table
from pipelines.core.config import PipelineConfig
from pipelines.core.stages import BY_NAME, CHAIN, StageResult
from pipelines.ingest.stage import source_of
from pipelines.kinds import kind_of
from pipelines.pipeline import freshness

log = logging.getLogger(__name__)


def _entry(stage: str) -> Callable[..., StageResult]:
    """The stage's function (its table ``entry``), imported now: only the stages that run load
    TensorFlow or MLflow."""
    return pkgutil.resolve_name(BY_NAME[stage].entry)


def _recorded(result: StageResult) -> dict:
    return {**result.summary, "lines": list(result.lines)}


def run_stage(stage: str, config: PipelineConfig, force: bool = False, **options) -> dict:
    """Run ``stage``, or skip it when its inputs and config did not change since its last success
    (``force`` runs it anyway); either way one line says which, and why."""
    stage_table.running = stage
    if stage == CHAIN[0]:  # the first stage reads the raw data: its listing is an input
        options.update(source=source_of(config), force=force)
    check = freshness.check(stage, config, source=options.get("source"), force=force)
    if check.skip:
        log.info("%s: skipped, %s; --force redoes it", stage, check.reason)
        return {**check.summary, "skipped": [stage]}
    log.info("%s: running (%s)", stage, check.reason)
    freshness.forget(stage, config)
    started = time.perf_counter()
    summary = _recorded(_entry(stage)(config, **options))
    freshness.record_success(stage, config, check.inputs, summary)
    return {**summary, "stage_seconds": {stage: round(time.perf_counter() - started, 2)}}


def run_all(config: PipelineConfig, force: bool = False) -> dict:
    """Every stage the kind declares, top to bottom; then the promotion gate if ``promote.enabled``.
    Stages that are unchanged since their last success are skipped, so a re-run continues where
    an earlier one stopped."""
    from pipelines.train.launchers import RankPool

    summary: dict = {"skipped": []}
    kind_stages = kind_of(config).stages
    # The kind's stages, and each optional one whose config section enables it (promote.enabled).
    stages = [s for s in CHAIN if s in kind_stages or not BY_NAME[s].always and getattr(config, s).enabled]
    with RankPool(config.train) as pool:  # evaluate and promote reuse the ranks training started
        for stage in stages:
            options = {"pool": pool} if BY_NAME[stage].on_ranks else {}
            result = run_stage(stage, config, force=force, **options)
            summary["skipped"] += result.pop("skipped", [])
            summary.setdefault("stage_seconds", {}).update(result.pop("stage_seconds", {}))
            summary.setdefault("lines", []).extend(result.pop("lines", []))
            summary.update(result)
    stage_table.running = None
    return summary


def run_one(stage: str, config: PipelineConfig, force: bool = False, **options) -> dict:
    """What ``dlfusion STAGE`` runs: ``run``, ``score`` (always runs), or one stage of the chain."""
    stage_table.running = None
    if stage == "run":
        return run_all(config, force=force)
    if BY_NAME[stage].always_runs:
        return _recorded(_entry(stage)(config))
    summary = run_stage(stage, config, force=force, **options)
    summary.setdefault("skipped", [])
    return summary
