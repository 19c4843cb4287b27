"""Score stage: new raw data -> predictions of a logged model, applied with ``mlflow.pyfunc.spark_udf``.

The kind reads the raw input the way its ingest does (bounded memory, raw bytes read where they are
decoded) and writes what its model takes to a staging folder, and what it cannot use to the
quarantine folder with the reason. The model, downloaded once, then runs inside a Spark UDF on the
executors with its own saved transform, and the predictions are written as Parquet: the input's key
and path, the predicted class name, its probability and every class's probability. Every run
checks inputs = scored + quarantined, counted from the written files' footers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.core.errors import ConfigError, DataError
from pipelines.io import atomic, filesystems, parquet, spark_writes
from pipelines.kinds import kind_of
from pipelines.runtime.progress import spark_stage
from pipelines.track import pyfunc, registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreInputs:
    """What a kind's ``score_input`` part staged."""

    seen: int | None  # inputs found before parsing (files); None: the records parsed are the inputs
    columns: tuple[str, ...]  # staged columns the model takes, in the order of its signature


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring run read, scored and quarantined."""

    inputs: int
    scored: int
    quarantined: int
    model_uri: str
    output: str
    seconds: float = 0.0


def model_uri_of(config: PipelineConfig) -> str:
    """``score.model_uri``; else the registered model's champion; else this kind's latest training."""
    if config.score.model_uri:
        return config.score.model_uri
    if config.mlflow.registered_model:
        return f"models:/{config.mlflow.registered_model}@{registry.CHAMPION}"
    from pipelines.track import runs

    return f"runs:/{runs.trained_run_id(config)}/model"


def output_of(config: PipelineConfig) -> str:
    return config.score.output or str(Catalog.for_workdir(config.workdir).workdir / "scores")


def predictions(staged: DataFrame, predict, columns: tuple[str, ...], class_names: list[str]) -> DataFrame:
    """Staged model input -> (key, path, prediction, confidence, probabilities by class name)."""
    probabilities = predict(*[F.col(name) for name in columns])
    names = F.array(*[F.lit(name) for name in class_names])
    scored = staged.select("key", "path", probabilities.alias("p"))
    return scored.select(
        "key",
        "path",
        F.element_at(names, F.array_position("p", F.array_max("p")).cast("int")).alias("prediction"),
        F.array_max("p").alias("confidence"),
        F.map_from_arrays(names, "p").alias("probabilities"),
    )


def run(config: PipelineConfig, spark: SparkSession) -> ScoreReport:
    """Score ``data.source`` with ``model_uri_of(config)`` into ``output_of(config)``."""
    import numpy as np

    from pipelines.preprocess.transforms import load_transform
    from pipelines.runtime.spark import size_batches

    kind = kind_of(config)
    if kind.score_input is None:
        raise ConfigError("pipeline", f"{kind.name} models take no input data to score")
    source = config.data.source
    if not source:
        raise ConfigError("data.source", "required for scoring: the raw data to score")
    model_uri, output = model_uri_of(config), output_of(config).rstrip("/")
    staging = f"{output}/.staging-{uuid.uuid4().hex[:8]}"
    locations = {
        "listing": f"{staging}/listing",
        "inputs": f"{staging}/inputs",
        "quarantined": f"{output}/quarantine",
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path, transform_file = pyfunc.download_model(config.tracking_uri, model_uri, Path(tmp))
        transform = load_transform(transform_file)
        with spark_stage(spark, "score", total=100, unit="%") as stage:
            stage.phase = "read"
            inputs = kind.part("score_input")(config, spark, source, transform, locations)
            stage.phase = "predict"
            size_batches(spark, int(np.prod(transform.feature_shape)) * 4 + 400)
            predict = pyfunc.probabilities_udf(spark, model_path)
            staged = spark.read.parquet(locations["inputs"])
            scored = predictions(staged, predict, inputs.columns, transform.class_names)
            spark_writes.write_parquet_atomically(scored, f"{output}/predictions")
    report = _accounted(inputs, locations, output, model_uri, source, stage.seconds)
    _remove(staging)
    atomic.write_json_atomically(asdict(report), f"{output.rstrip('/')}/report.json")
    log.info(
        "score: %d inputs = %d scored + %d quarantined, predictions in %s/predictions",
        report.inputs,
        report.scored,
        report.quarantined,
        output,
    )
    return report


def _accounted(
    inputs: ScoreInputs, locations: dict[str, str], output: str, model_uri: str, source: str, seconds: float
) -> ScoreReport:
    """Count the staged, scored and quarantined rows from the footers and check nothing was lost."""
    staged = sum(parquet.row_group_sizes(locations["inputs"]))
    scored = sum(parquet.row_group_sizes(f"{output}/predictions"))
    quarantined = sum(parquet.row_group_sizes(locations["quarantined"]))
    seen = staged + quarantined if inputs.seen is None else inputs.seen
    if scored != staged or seen != scored + quarantined:
        raise DataError(
            source, f"inputs ({seen}) != scored ({scored}) + quarantined ({quarantined}); staged {staged}"
        )
    return ScoreReport(seen, scored, quarantined, model_uri, output, round(seconds, 2))


def _remove(location: str) -> None:
    fs, path, prefix = filesystems.filesystem(location)
    if prefix == "file:":
        shutil.rmtree(path, ignore_errors=True)
    else:
        fs.delete_dir(path)
