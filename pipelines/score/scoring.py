"""Score stage: new raw data -> predictions of a logged model, in one pass.

The kind reads the raw input the way its ingest does (bounded memory, raw bytes read where they are
decoded), and hands each batch of usable input, in the Spark task's Python worker that read it, to
a ``BatchScorer``: the logged pyfunc, loaded once per worker from its files, predicts the batch
there, and the task writes the predictions (the input's key and path, the predicted class name, its
probability and every class's probability) and the unusable inputs with their reason. Measured at
8,000-32,000 images, staging the decoded input and applying ``mlflow.pyfunc.spark_udf`` to it was
slower (35 s instead of 29 for 32,000 files): the pixels crossed the JVM twice, as lists of bytes,
and were written and read once more. Every run checks inputs = scored + quarantined, counted from the
written files' footers.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import SparkSession

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig
from pipelines.core.errors import ConfigError, DataError
from pipelines.io import atomic, filesystems, parquet
from pipelines.kinds import kind_of
from pipelines.runtime.progress import spark_stage
from pipelines.track import pyfunc, registry

log = logging.getLogger(__name__)


# What a scoring run writes for each usable input.
PREDICTIONS = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("prediction", pa.string()),
        ("confidence", pa.float64()),
        ("probabilities", pa.map_(pa.string(), pa.float64())),
        ("input_shape", pa.string()),  # the raw input's shape band, as the data profile has them
    ]
)


@dataclass(frozen=True)
class ScoreInputs:
    """What a kind's ``score_input`` part found."""

    seen: int | None  # inputs found before parsing (files); None: the records parsed are the inputs


@dataclass(frozen=True)
class BatchScorer:
    """The logged model, applied where a batch of input was read (a Spark task's Python worker).

    Picklable (plain strings and the transform); the model is loaded from its files
    (``pyfunc.model_files``) once per worker process, which Spark reuses from task to task.
    """

    model_files: str
    tracking_uri: str
    transform: Any

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """A batch of usable input (``key``, ``path``, ``input_shape`` and what the transform's
        ``model_input`` reads) -> its ``PREDICTIONS``, one row per input row."""
        import numpy as np

        names = list(self.transform.class_names)
        probabilities = np.asarray(self._model().predict(self.transform.model_input(batch.to_pandas())))
        if probabilities.shape != (batch.num_rows, len(names)):
            raise DataError(
                self.model_files,
                f"the model gave {probabilities.shape} probabilities for {batch.num_rows} inputs "
                f"and {len(names)} classes",
            )
        best = probabilities.argmax(axis=1)
        offsets = pa.array(np.arange(0, probabilities.size + 1, len(names), dtype=np.int32))
        by_class = pa.MapArray.from_arrays(
            offsets, pa.array(names * batch.num_rows), pa.array(probabilities.astype(np.float64).ravel())
        )
        columns = [
            batch.column("key"),
            batch.column("path"),
            pa.array(np.asarray(names, dtype=object)[best], pa.string()),
            pa.array(probabilities.max(axis=1).astype(np.float64)),
            by_class,
            batch.column("input_shape"),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=PREDICTIONS)

    def batches(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``self`` over a stream of batches (for ``DataFrame.mapInArrow``), empty ones skipped."""
        for batch in batches:
            if batch.num_rows:
                yield self(batch)

    def _model(self):
        if self.model_files not in _LOADED:
            from pipelines.runtime.logs import quiet_library_warnings

            quiet_library_warnings()
            _threads_of_this_task()
            _LOADED.clear()  # one model per worker: a worker reused by another scoring run drops the last
            _LOADED[self.model_files] = pyfunc.load_model(self.model_files, self.tracking_uri)
        return _LOADED[self.model_files]


_LOADED: dict[str, Any] = {}  # this process's loaded model, by its files' location


def _threads_of_this_task() -> None:
    """Let TensorFlow, not yet started in this worker, use the CPUs Spark gave the task
    (``spark.task.cpus``) rather than every core of the machine: an executor runs one worker per
    task slot, and N workers each with a pool of N threads oversubscribe it N times. (On this
    2-core machine it measured the same either way.) A user's own
    ``spark.executorEnv.TF_NUM_*_THREADS`` wins."""
    import os

    from pyspark import TaskContext

    task = TaskContext.get()
    cpus = str(task.cpus() if task else os.cpu_count() or 1)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", cpus)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", cpus)


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring run read, scored and quarantined."""

    inputs: int
    scored: int
    quarantined: int
    model_uri: str
    output: str
    seconds: float = 0.0
    # The population stability index of the predicted classes and of the inputs' shapes against
    # the model's training data (its run's data profile); None when that run has no profile.
    drift: dict[str, float] | None = None


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


def run(config: PipelineConfig, spark: SparkSession) -> ScoreReport:
    """Score ``data.source`` with ``model_uri_of(config)`` into ``output_of(config)``."""
    from pipelines.preprocess.transforms import load_transform

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
        "predictions": f"{output}/predictions",
        "quarantined": f"{output}/quarantine",
    }
    with tempfile.TemporaryDirectory() as tmp:
        _, transform_file = pyfunc.download_model(config.tracking_uri, model_uri, Path(tmp))
        transform = load_transform(transform_file)
    scorer = BatchScorer(pyfunc.model_files(model_uri, config.tracking_uri), config.tracking_uri, transform)
    with spark_stage(spark, "score", total=100, unit="%") as stage:
        inputs = kind.part("score_input")(config, spark, source, transform, locations, scorer)
    report = _accounted(inputs, locations, output, model_uri, source, stage.seconds)
    report = replace(report, drift=_drift(config.tracking_uri, model_uri, locations["predictions"]))
    _remove(staging)
    atomic.write_json_atomically(asdict(report), f"{output}/report.json")
    log.info(
        "score: %d inputs = %d scored + %d quarantined, predictions in %s",
        report.inputs,
        report.scored,
        report.quarantined,
        locations["predictions"],
    )
    return report


def _drift(tracking_uri: str, model_uri: str, predictions: str) -> dict[str, float] | None:
    """The drift of what was scored against the data the model was trained on, logged to its
    training run (``score_class_drift``, ``score_shape_drift``)."""
    from collections import Counter

    from pipelines.preprocess.profile import stability_index
    from pipelines.track import runs

    run_id = pyfunc.run_of(model_uri, tracking_uri)
    trained = runs.data_profile(tracking_uri, run_id)
    if trained is None:
        return None
    classes: Counter = Counter()
    shapes: Counter = Counter()
    for batch in parquet.column_batches(predictions, ["prediction", "input_shape"]):
        classes.update(batch.column(0).to_pylist())
        shapes.update(shape or "unknown" for shape in batch.column(1).to_pylist())
    drift = {
        "classes": stability_index(dict(classes), trained["classes"]),
        "shapes": stability_index(dict(shapes), trained["shapes"]),
    }
    runs.log_score_drift(tracking_uri, run_id, drift)
    log.info(
        "score: drift against the training data: classes %.3f, shapes %.3f", drift["classes"], drift["shapes"]
    )
    return drift


def _accounted(
    inputs: ScoreInputs, locations: dict[str, str], output: str, model_uri: str, source: str, seconds: float
) -> ScoreReport:
    """Count the scored and quarantined rows from the footers and check nothing was lost."""
    scored = sum(parquet.row_group_sizes(locations["predictions"]))
    quarantined = sum(parquet.row_group_sizes(locations["quarantined"]))
    seen = scored + quarantined if inputs.seen is None else inputs.seen
    if seen != scored + quarantined:
        raise DataError(source, f"inputs ({seen}) != scored ({scored}) + quarantined ({quarantined})")
    return ScoreReport(seen, scored, quarantined, model_uri, output, round(seconds, 2))


def _remove(location: str) -> None:
    fs, path, prefix = filesystems.filesystem(location)
    if prefix == "file:":
        shutil.rmtree(path, ignore_errors=True)
    else:
        fs.delete_dir(path)
