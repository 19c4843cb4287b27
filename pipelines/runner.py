"""The stages as one story: ingest -> preprocess -> train -> evaluate, each also callable alone."""

from __future__ import annotations

import logging
from dataclasses import asdict

from pipelines import ingest, preprocess, text_ingest, text_preprocess
from pipelines.catalog import Catalog
from pipelines.config import PipelineConfig
from pipelines.demo import write_digits_images, write_reviews
from pipelines.spark import get_spark

log = logging.getLogger(__name__)


def source_of(config: PipelineConfig) -> str:
    """``data.source``, or the digits demo written under workdir when none is given."""
    if config.data.source:
        return config.data.source
    catalog = Catalog.for_workdir(config.workdir)
    if config.pipeline == "text_lstm":
        demo = write_reviews(catalog.demo_texts)
    else:
        demo = write_digits_images(catalog.demo_images)
    log.info("no data.source given: using the demo data written to %s", demo)
    return str(demo)


def run_ingest(config: PipelineConfig) -> dict:
    stage = text_ingest if config.pipeline == "text_lstm" else ingest
    return {"ingest": asdict(stage.run(config, get_spark(config.spark), source_of(config)))}


def run_preprocess(config: PipelineConfig) -> dict:
    stage = text_preprocess if config.pipeline == "text_lstm" else preprocess
    report = stage.run(config, get_spark(config.spark))
    return {
        "splits": {name: split["rows"] for name, split in report["splits"].items()},
        "preprocess": {"seconds": report["seconds"], "spark_jobs": report["spark_jobs"]},
    }


def run_train(config: PipelineConfig) -> dict:
    # TensorFlow and MLflow take seconds to import: only the stages that need them load them.
    from pipelines import training

    result = training.run(config)
    final = {key: values[-1] for key, values in result.history.items() if values}
    return {"run_id": result.run_id, "model_uri": result.model_uri, "final_epoch_metrics": final}


def run_evaluate(config: PipelineConfig) -> dict:
    from pipelines import evaluation

    return {"test_metrics": evaluation.run(config, get_spark(config.spark))}


def run_all(config: PipelineConfig) -> dict:
    """The whole pipeline, top to bottom."""
    summary: dict = {}
    for stage in (run_ingest, run_preprocess, run_train, run_evaluate):
        summary.update(stage(config))
    return summary


STAGES = {
    "ingest": run_ingest,
    "preprocess": run_preprocess,
    "train": run_train,
    "evaluate": run_evaluate,
    "run": run_all,
}
