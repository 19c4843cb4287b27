"""The stages as one story: ingest -> preprocess -> train -> evaluate, each also callable alone.

Every stage takes the config's kind (``pipelines.kinds``) and calls that kind's part.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from pipelines.catalog import Catalog
from pipelines.config import PipelineConfig
from pipelines.kinds import kind_of
from pipelines.spark import get_spark

log = logging.getLogger(__name__)

# The stage ``run_all`` is in, so that a failure's summary can name it.
current_stage: str | None = None


def source_of(config: PipelineConfig) -> str:
    """``data.source``, or the kind's demo data written under workdir when none is given."""
    if config.data.source:
        return config.data.source
    demo = kind_of(config).part("demo")(Catalog.for_workdir(config.workdir))
    log.info("no data.source given: using the demo data written to %s", demo)
    return str(demo)


def run_ingest(config: PipelineConfig) -> dict:
    ingest = kind_of(config).part("ingest")
    return {"ingest": asdict(ingest(config, get_spark(config.spark), source_of(config)))}


def run_preprocess(config: PipelineConfig) -> dict:
    report = kind_of(config).part("preprocess")(config, get_spark(config.spark))
    return {
        "splits": {name: split["rows"] for name, split in report["splits"].items()},
        "preprocess": {"seconds": report["seconds"], "spark_jobs": report["spark_jobs"]},
    }


def run_train(config: PipelineConfig) -> dict:
    # TensorFlow and MLflow take seconds to import: only the stages that need them load them.
    from pipelines import training

    result = training.run(config)
    final = {key: values[-1] for key, values in result.history.items() if values}
    summary = {"run_id": result.run_id, "model_uri": result.model_uri, "final_epoch_metrics": final}
    if result.early_stopping:
        summary["early_stopping"] = result.early_stopping
    return summary


def run_evaluate(config: PipelineConfig) -> dict:
    from pipelines import evaluation

    kind = kind_of(config)
    metrics = evaluation.run(config, get_spark(config.spark))
    return {"test_metrics": metrics, "primary_metric": {kind.primary_metric: metrics[kind.primary_metric]}}


def run_promote(config: PipelineConfig, force: bool = False) -> dict:
    from pipelines import promotion

    return {"promotion": promotion.run(config, get_spark(config.spark), force=force)}


def run_score(config: PipelineConfig) -> dict:
    from pipelines import scoring

    return {"score": asdict(scoring.run(config, get_spark(config.spark)))}


STAGE_RUNNERS = {
    "ingest": run_ingest,
    "preprocess": run_preprocess,
    "train": run_train,
    "evaluate": run_evaluate,
}


def run_all(config: PipelineConfig) -> dict:
    """Every stage the kind declares, top to bottom; then the promotion gate if ``promote.enabled``."""
    global current_stage
    summary: dict = {}
    for stage in kind_of(config).stages:
        current_stage = stage
        summary.update(STAGE_RUNNERS[stage](config))
    if config.promote.enabled:
        current_stage = "promote"
        summary.update(run_promote(config))
    current_stage = None
    return summary


STAGES = {**STAGE_RUNNERS, "promote": run_promote, "score": run_score, "run": run_all}
