"""Train stage: Petastorm-streamed splits -> Horovod data-parallel Keras training -> MLflow model.

The driver plans (steps per epoch, shard checks), creates the MLflow run and launches the ranks
with plain data (a TrainJob); the ranks train; rank 0 alone checkpoints and records the epoch
metrics, which the driver sends to MLflow as they come.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import locations
from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig, PretrainedWeights
from pipelines.core.errors import ConfigError, DataError, Interrupted, TrackingError, TrainingError
from pipelines.io import atomic, filesystems, parquet, retention
from pipelines.preprocess.transforms import load_transform
from pipelines.track import pyfunc, registry, runs
from pipelines.track.relay import MetricsRelay
from pipelines.train.launchers import RankPool, launch
from pipelines.train.loader import plan_shards
from pipelines.train.task import TrainJob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    initial_epoch: int
    history: dict[str, list[float]]
    rank_digests: list[str]
    early_stopping: dict | None = None
    timing: dict[str, float] | None = None
    compute_dtypes: list[str] | None = None  # of the layers with weights, on the ranks


def class_weights(label_counts: list[int]) -> dict[int, float]:
    """Inverse-frequency weights that give every class the same total weight (mean weight 1)."""
    present = {label: count for label, count in enumerate(label_counts) if count}
    total = sum(present.values())
    return {label: total / (len(present) * count) for label, count in present.items()}


def initial_weights(config: PipelineConfig, catalog: Catalog, run_id: str) -> str | None:
    """The Keras file ``train.init_from`` names, downloaded under the run's own folder, or None to
    train from scratch: ``none``, no champion yet, or a model of other classes (said in one line).

    Raises:
        ConfigError: on ``train.init_from`` for ``champion`` without ``mlflow.registered_model``,
            or a run that logged no dlfusion model.
    """
    source = config.train.init_from
    if source == "none":
        return None
    if source == "champion":
        name = config.mlflow.registered_model
        if not name:
            raise ConfigError(
                "train.init_from", "champion needs mlflow.registered_model (the registry's name)"
            )
        if registry.champion_version(config.tracking_uri, name) is None:
            log.info("train.init_from: %s has no champion yet: training from scratch", name)
            return None
        model_uri = f"models:/{name}@{registry.CHAMPION}"
    else:
        model_uri = f"runs:/{source}/model"
    target = catalog.trained_model(run_id).parent / "init"
    try:
        keras_file, transform_file = pyfunc.download_weights(config.tracking_uri, model_uri, target)
    except DataError as err:
        raise ConfigError("train.init_from", err.problem) from None
    before, now = load_transform(transform_file), load_transform(catalog.transform)
    if before.class_names != now.class_names:
        log.warning(
            "train.init_from: the classes changed since %s (%d then, %d now): training from scratch",
            model_uri,
            len(before.class_names),
            len(now.class_names),
        )
        return None
    runs.set_tags(config.tracking_uri, run_id, {"dlfusion.init_from": model_uri})
    return str(keras_file)


def pretrained_weights(config: PipelineConfig, catalog: Catalog, run_id: str) -> PipelineConfig:
    """``config`` with ``model.weights`` (where the kind's model has that key) as a local file the
    ranks read: an MLflow model's Keras file or a file on an object store are fetched under the
    run's own folder first. The ranks never import MLflow.

    Raises:
        ConfigError: on ``model.weights``, for a file that is not there or not a Keras file.
    """
    model = getattr(config, "model", None)
    if not isinstance(model, PretrainedWeights) or model.weights == "none":
        return config
    source, target = model.weights, catalog.trained_model(run_id).parent / "pretrained"
    if source.startswith(("runs:/", "models:/")):
        try:
            local = str(pyfunc.download_weights(config.tracking_uri, source, target)[0])
        except DataError as err:
            raise ConfigError("model.weights", err.problem) from None
    elif not source.endswith((".h5", ".keras")):
        raise ConfigError("model.weights", f"not a Keras file (.h5, .weights.h5 or .keras): {source}")
    elif not filesystems.is_file(source):
        raise ConfigError("model.weights", f"no such file: {source}")
    elif locations.is_uri(source):
        local = str(target / source.rpartition("/")[2])
        atomic.write_atomically(Path(local), lambda path: path.write_bytes(filesystems.read_bytes(source)))
    else:
        local = str(Path(source).resolve())
    if local != source:
        log.info("model.weights: %s fetched to %s", source, local)
    return config.model_copy(update={"model": model.model_copy(update={"weights": local})})


def run(config: PipelineConfig, pool: RankPool | None = None) -> TrainResult:
    """Plan, open (or resume) the MLflow run, train on the ranks, log the model. The local ranks come
    from ``pool`` (and stay in it) when given; else they are started here and ended with training."""
    locations.require_local(config.workdir, "training (Keras and numpy write its checkpoints as local files)")
    catalog = Catalog.for_workdir(config.workdir)
    if not catalog.transform.is_file():
        raise DataError(str(catalog.transform), "no preprocessed data: run the preprocess stage first")
    train = config.train
    train_plan = plan_shards(catalog.split("train"), train.num_proc, train.batch_size)
    validate = parquet.row_group_sizes(catalog.split("val")) != []
    if validate:
        plan_shards(catalog.split("val"), train.num_proc, train.batch_size)

    preprocessed = atomic.read_json(catalog.preprocess_report)
    weights = None
    if train.class_weight == "balanced":
        weights = class_weights(preprocessed["splits"]["train"]["label_counts"])
    with contextlib.ExitStack() as own:
        asked = time.time()
        ranks = (pool or own.enter_context(RankPool(train))).get()
        resumed_id = runs.resume_run(config) if train.resume else None
        run_id = resumed_id or runs.start_run(config, preprocessed)
        runs.record_latest_run(config, run_id)
        if resumed_id is None:
            profile = atomic.read_json(catalog.profile) if filesystems.is_file(catalog.profile) else None
            runs.log_data(config, run_id, atomic.read_json(catalog.ingest_report), preprocessed, profile)
            pyfunc.log_transform(run_id, catalog.transform)
        log.info(
            "training %d epochs on %d ranks (%s launcher), %d steps per epoch; MLflow run %s",
            train.epochs,
            train.num_proc,
            train.launcher,
            train_plan.steps_per_epoch,
            run_id,
        )
        try:
            runs.mark_running(config.tracking_uri, run_id)
            runs.flush_pending_metrics(config.tracking_uri, run_id, catalog.pending_metrics(run_id))
            # Ranks a pool started before this stage (evaluate's, a test's) cost it nothing to start.
            launched = max(ranks.started, asked) if ranks else time.time()
            init = initial_weights(config, catalog, run_id) if resumed_id is None else None
            ranks_config = pretrained_weights(config, catalog, run_id)
            job = TrainJob(ranks_config, run_id, train_plan, validate, weights, init)
            pending = catalog.pending_metrics(run_id)
            # The local launcher's ranks share this machine: its system metrics are theirs.
            with runs.system_metrics(config.tracking_uri, run_id, enabled=train.launcher == "local"):
                with MetricsRelay(config.tracking_uri, run_id, catalog.epoch_metrics(run_id), pending):
                    results = launch(job, ranks)
            digests = [result["weights_digest"] for result in results]
            if len(set(digests)) != 1:  # data parallelism must leave every rank with the same model
                raise TrainingError(-1, f"ranks finished with different weights: {digests}")
            epochs_run = [result["epochs_run"] for result in results]
            if len(set(epochs_run)) != 1:  # early stopping must stop every rank at the same epoch
                raise TrainingError(-1, f"ranks ran different numbers of epochs: {epochs_run}")
            first = results[0]
        except BaseException as err:
            runs.mark_failed(
                config.tracking_uri, run_id, "KILLED" if isinstance(err, Interrupted) else "FAILED"
            )
            raise
    try:
        runs.flush_pending_metrics(config.tracking_uri, run_id, catalog.pending_metrics(run_id))
        runs.log_training_outcome(config, run_id, first.get("early_stopping"))
        model_uri = pyfunc.log_model(config, run_id, catalog.trained_model(run_id), catalog.transform)
    except Exception as err:  # the training itself is done and kept: say how to log it later
        raise TrackingError(
            f"training finished, but MLflow at {runs.redact(config.tracking_uri)} failed "
            f"({str(err).splitlines()[0][:200]}); the model and checkpoint are kept in "
            f"{catalog.trained_model(run_id).parent}: when the server answers, log them with "
            "dlfusion train CONFIG train.resume=true"
        ) from err
    retention.keep_newest(catalog.checkpoints, config.retention.checkpoints, protect={run_id})
    retention.keep_newest(catalog.logs, config.retention.logs)
    timing = stage_timing(launched, first["marks"], time.time())
    log.info(
        "train: epochs' steps %.1f s (the first, with tracing, %.1f s); validation %.1f s; outside "
        "the epochs: ranks start %.1f s, their set-up %.1f s, epoch-end work %.1f s, export %.1f s, "
        "MLflow %.1f s",
        timing["epoch_steps_s"] + timing["first_epoch_steps_s"], timing["first_epoch_steps_s"],
        timing["validation_s"], timing["ranks_start_s"], timing["rank_setup_s"], timing["epoch_end_work_s"],
        timing["export_s"], timing["mlflow_s"],
    )  # fmt: skip
    return TrainResult(
        run_id,
        model_uri,
        first["initial_epoch"],
        first["history"],
        digests,
        first.get("early_stopping"),
        timing,
        first.get("compute_dtypes"),
    )


def stage_timing(launched: float, marks: dict[str, list[float]], finished: float) -> dict[str, float]:
    """Where the train stage's time went, in seconds, from rank 0's clock marks (``EpochClock``):
    starting the ranks until their job starts (interpreters and TensorFlow's import, while the
    driver opens the MLflow run; for the Spark launcher, its tasks), their set-up (``hvd.init``,
    the model, the readers), the first epoch's steps (tracing the step) and the others', validation, the
    rest of the epoch-end work (averaging, checkpoint, MLflow), export, and what follows on the
    driver (ranks exit, the model is logged to MLflow)."""
    steps = [end - begin for begin, end in zip(marks["epoch_begin"], marks["steps_end"], strict=True)]
    validation = [e - b for b, e in zip(marks["validation_begin"], marks["validation_end"], strict=True)]
    epochs = [e - b for b, e in zip(marks["epoch_begin"], marks["epoch_end"], strict=True)]
    timing = {
        "ranks_start_s": marks["worker_start"][0] - launched,
        "rank_setup_s": marks["epoch_begin"][0] - marks["worker_start"][0] if steps else 0.0,
        "first_epoch_steps_s": steps[0] if steps else 0.0,
        "epoch_steps_s": sum(steps[1:]),
        "validation_s": sum(validation),
        "epoch_end_work_s": sum(epochs) - sum(steps) - sum(validation),
        "export_s": marks["exported"][0] - (marks["epoch_end"][-1] if epochs else marks["worker_start"][0]),
        "mlflow_s": finished - marks["exported"][0],
    }
    return {key: round(value, 2) for key, value in timing.items()}
