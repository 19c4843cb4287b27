"""The stages as one story: ingest -> preprocess -> train -> evaluate, each also callable alone.

Every stage takes the config's kind (``pipelines.kinds``) and calls that kind's part. A stage whose
inputs and config did not change since its last success is skipped (``pipelines.pipeline.freshness``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from pipelines.core import stages as stage_table
from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.core.stages import BY_NAME, CHAIN
from pipelines.kinds import kind_of
from pipelines.pipeline import freshness
from pipelines.runtime.spark import get_spark

log = logging.getLogger(__name__)


def source_of(config: PipelineConfig) -> str:
    """``data.source``, or the kind's demo data written under workdir when none is given."""
    if config.data.source:
        return config.data.source
    demo = kind_of(config).part("demo")(Catalog.for_workdir(config.workdir))
    log.info("no data.source given: using the demo data written to %s", demo)
    return str(demo)


def run_ingest(config: PipelineConfig, source: str | None = None) -> dict:
    ingest = kind_of(config).part("ingest")
    return {"ingest": asdict(ingest(config, get_spark(config.spark), source or source_of(config)))}


def run_preprocess(config: PipelineConfig) -> dict:
    report = kind_of(config).part("preprocess")(config, get_spark(config.spark))
    return {
        "splits": {name: split["rows"] for name, split in report["splits"].items()},
        "preprocess": {"seconds": report["seconds"], "spark_jobs": report["spark_jobs"]},
    }


def run_train(config: PipelineConfig, pool=None) -> dict:
    # TensorFlow and MLflow take seconds to import: only the stages that need them load them.
    from pipelines.train import driver

    result = driver.run(config, pool)
    final = {key: values[-1] for key, values in result.history.items() if values}
    summary = {"run_id": result.run_id, "model_uri": result.model_uri, "final_epoch_metrics": final}
    if result.timing:
        summary["train_timing"] = result.timing
    if result.early_stopping:
        summary["early_stopping"] = result.early_stopping
    return summary


def run_evaluate(config: PipelineConfig, pool=None) -> dict:
    from pipelines.evaluate import evaluation

    kind = kind_of(config)
    metrics = evaluation.run(config, get_spark(config.spark), pool=pool)
    return {"test_metrics": metrics, "primary_metric": {kind.primary_metric: metrics[kind.primary_metric]}}


def run_promote(config: PipelineConfig, override_gate: bool = False) -> dict:
    from pipelines.promote import promotion

    return {"promotion": promotion.run(config, get_spark(config.spark), override_gate=override_gate)}


def run_score(config: PipelineConfig) -> dict:
    from pipelines.score import scoring

    return {"score": asdict(scoring.run(config, get_spark(config.spark)))}


STAGE_RUNNERS = {
    "ingest": run_ingest,
    "preprocess": run_preprocess,
    "train": run_train,
    "evaluate": run_evaluate,
    "promote": run_promote,
}


def run_stage(stage: str, config: PipelineConfig, force: bool = False, **options) -> dict:
    """Run ``stage``, or skip it when its inputs and config did not change since its last success
    (``force`` runs it anyway); either way one line says which, and why."""
    stage_table.running = stage
    if stage == CHAIN[0]:  # the first stage reads the raw data: its listing is an input
        options["source"] = source_of(config)
    check = freshness.check(stage, config, source=options.get("source"), force=force)
    if check.skip:
        log.info("%s: skipped, %s; --force redoes it", stage, check.reason)
        return {**check.summary, "skipped": [stage]}
    log.info("%s: running (%s)", stage, check.reason)
    freshness.forget(stage, config)
    started = time.perf_counter()
    summary = STAGE_RUNNERS[stage](config, **options)
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
    with RankPool(config.train) as pool:  # evaluate reuses the ranks training started
        for stage in stages:
            options = {"pool": pool} if BY_NAME[stage].on_ranks else {}
            result = run_stage(stage, config, force=force, **options)
            summary["skipped"] += result.pop("skipped", [])
            summary.setdefault("stage_seconds", {}).update(result.pop("stage_seconds", {}))
            summary.update(result)
    stage_table.running = None
    return summary


def run_one(stage: str, config: PipelineConfig, force: bool = False, **options) -> dict:
    """What ``dlfusion STAGE`` runs: ``run``, ``score`` (always runs), or one stage of the chain."""
    stage_table.running = None
    if stage == "run":
        return run_all(config, force=force)
    if stage == "score":
        return run_score(config)
    summary = run_stage(stage, config, force=force, **options)
    summary.setdefault("skipped", [])
    return summary
