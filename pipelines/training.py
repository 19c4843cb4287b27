"""Train stage: Petastorm-streamed splits -> Horovod data-parallel Keras training -> MLflow model.

The driver plans (steps per epoch, shard checks), creates the MLflow run and launches the ranks
with plain data (a TrainJob); the ranks train; rank 0 alone checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines import local_ranks, storage, tracking
from pipelines.catalog import Catalog
from pipelines.config import PipelineConfig
from pipelines.data_loading import LOADER_ERROR, InputStall, ShardPlan, plan_shards
from pipelines.errors import DataError, Interrupted, TrackingError, TrainingError

if TYPE_CHECKING:
    import keras

    from pipelines.transforms import Transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """Everything a rank needs, as plain picklable data."""

    config: PipelineConfig
    run_id: str
    train_plan: ShardPlan
    validate: bool
    class_weight: dict[int, float] | None = None


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    initial_epoch: int
    history: dict[str, list[float]]
    rank_digests: list[str]
    early_stopping: dict | None = None
    timing: dict[str, float] | None = None


# ---------------------------------------------------------------- on every rank


def train_worker(job: TrainJob) -> dict:
    """Train on this rank's shard. Returns a digest of the final weights (and on rank 0 the history)."""
    started = time.time()  # the rank's process is up and has this function
    import horovod.tensorflow as hvd

    hvd.init()
    catalog = Catalog.for_workdir(job.config.workdir)
    try:
        return _train(job, hvd, catalog, started)
    except BaseException as err:
        # Keep the first real exception where the driver can find it, not just "rank exited".
        errors = catalog.rank_errors(job.run_id)
        errors.mkdir(parents=True, exist_ok=True)
        detail = f"{type(err).__name__}: {err}".splitlines()[0]
        cause = re.search(f"{LOADER_ERROR}.*", str(err))  # inside TensorFlow's "Graph execution error"
        if cause:
            detail = cause.group(0)
        (errors / f"rank-{hvd.rank()}.txt").write_text(detail + "\n\n" + traceback.format_exc())
        raise


@dataclass
class RankContext:
    """What a kind's training task sees on one rank."""

    config: PipelineConfig
    transform: Transform
    catalog: Catalog
    run_id: str
    rank: int
    size: int
    steps_per_epoch: int
    validate: bool

    def dataset(self, split: str, **options):
        """This rank's shard of ``split`` as a tf.data set of (features, labels) batches."""
        from pipelines.data_loading import split_dataset

        train = self.config.train
        return split_dataset(
            self.catalog.split(split),
            self.transform,
            batch_size=train.batch_size,
            rank=self.rank,
            size=self.size,
            seed=train.seed,
            readers=train.reader_workers,
            **options,
        )


class TrainingTask:
    """How a kind trains on every rank; the shared loop around it streams the data, broadcasts the
    initial state, averages epoch metrics, checkpoints, resumes and logs.

    ``build`` returns a compiled Keras model whose ``fit`` does the kind's training step (its
    optimizers built, gradients averaged over ranks); a model with several optimizers lists them in
    a ``distributed_optimizers`` attribute so that broadcast and checkpoints include them all.
    """

    def build(self, ctx: RankContext) -> keras.Model:
        raise NotImplementedError

    def callbacks(self, ctx: RankContext) -> list:
        """The kind's callbacks, run on every rank after epoch metrics are averaged."""
        return []

    def rank0_callbacks(self, ctx: RankContext) -> list:
        """Callbacks on rank 0 only, before the checkpoint and MLflow logging (e.g. samples, scores)."""
        return []

    def export(self, ctx: RankContext, model: keras.Model) -> keras.Model:
        """The plain Keras model to save for serving (no Horovod inside)."""
        raise NotImplementedError


def _train(job: TrainJob, hvd, catalog: Catalog, started: float) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipelines import horovod_keras as hk
    from pipelines.callbacks import Checkpoint, EpochClock, EpochLogger, InputStallMeter
    from pipelines.kinds import kind_of
    from pipelines.logs import setup_logging, verbose
    from pipelines.transforms import load_transform

    setup_logging()
    _pin_devices(tf, hvd)
    config, train = job.config, job.config.train
    rank = hvd.rank()
    keras.utils.set_random_seed(train.seed)
    ctx = RankContext(
        config,
        load_transform(catalog.transform),
        catalog,
        job.run_id,
        rank,
        hvd.size(),
        job.train_plan.steps_per_epoch,
        job.validate,
    )
    task = kind_of(config).part("task")()
    model = task.build(ctx)

    checkpoint = catalog.checkpoint(job.run_id)
    initial_epoch = 0
    if rank == 0 and train.resume and checkpoint.is_file():
        with np.load(checkpoint) as saved:
            hk.restore_state(model, {k: saved[k] for k in saved.files if k != "__epoch__"})
            initial_epoch = int(saved["__epoch__"])
        log.info("resuming from %s at epoch %d", checkpoint, initial_epoch + 1)
    initial_epoch = hvd.broadcast_object(initial_epoch, root_rank=0, name="initial_epoch")

    stall = InputStall()
    train_data = ctx.dataset(
        "train", shuffle_buffer=train.shuffle_buffer, first_pass=initial_epoch, stall=stall
    )
    # Order matters: metrics are averaged over ranks before the kind's callbacks add global figures
    # (validation), and all of that happens before rank 0 checkpoints and logs.
    marks: dict[str, list[float]] = {"worker_start": [started]}
    callbacks = [
        EpochClock(marks, at_begin="epoch_begin", at_end="steps_end"),
        hk.BroadcastInitialState(),
        InputStallMeter(stall),
        hk.AverageEpochMetrics(),
        EpochClock(marks, at_end="validation_begin"),
        *task.callbacks(ctx),
        EpochClock(marks, at_end="validation_end"),
    ]
    if rank == 0:
        callbacks += task.rank0_callbacks(ctx)
    stopping = None
    if train.early_stopping.enabled:  # after every callback that adds a metric it may watch
        settings = train.early_stopping
        stopping = hk.DistributedEarlyStopping(
            catalog.best_weights(job.run_id),
            monitor=settings.metric,
            mode=settings.direction,
            patience=settings.patience,
            min_delta=settings.min_delta,
        )
        callbacks.append(stopping)
    if rank == 0:
        pending = catalog.pending_metrics(job.run_id)
        callbacks += [Checkpoint(checkpoint), EpochLogger(config.tracking_uri, job.run_id, pending)]
    callbacks.append(EpochClock(marks, at_end="epoch_end"))

    with tracking.system_metrics(config.tracking_uri, job.run_id, enabled=rank == 0):
        history = model.fit(
            train_data,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=ctx.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the data set shuffles row groups and rows itself
            class_weight=job.class_weight,
            verbose=2 if rank == 0 and verbose() else 0,  # else EpochLogger's one line per epoch
        )
    outcome = {
        "rank": rank,
        "weights_digest": weights_digest(model.get_weights()),
        "initial_epoch": initial_epoch,
        "epochs_run": len(history.epoch),
    }
    if rank != 0:
        return outcome
    target = catalog.trained_model(job.run_id)
    storage.write_atomically(target, task.export(ctx, model).save)
    marks["exported"] = [time.time()]
    early = stopping.summary() if stopping else None
    return {**outcome, "history": history.history, "early_stopping": early, "marks": marks}


def weights_digest(arrays) -> str:
    """SHA-256 of a model's weight arrays, in order: equal digests, equal models."""
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()


def _pin_devices(tf, hvd) -> None:
    """One GPU per local rank (two ranks on one GPU is a classic misconfiguration); CPU threads shared."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))


# ---------------------------------------------------------------- on the driver


def _rank_environment(train) -> dict[str, str]:
    return {
        # A stalled rank turns into a failure after stall_timeout_s instead of hanging forever.
        "HOROVOD_STALL_CHECK_TIME_SECONDS": str(max(5, train.stall_timeout_s // 4)),
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": str(train.stall_timeout_s),
        "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # A tracking server outage must cost seconds per epoch, not stall the ranks for minutes.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an integer to MLflow
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }


class RankPool:
    """The local launcher's ranks for the stages of one run: started when a stage first asks for
    them, kept for the next. Training asks before it opens the MLflow run, so that the ranks'
    imports (TensorFlow, 3-4 s) overlap it; evaluate then scores the test split on processes that
    have TensorFlow already. The Spark launcher has none (its ranks are Spark tasks, per launch).

    Use as a context manager: leaving it ends the ranks it started.
    """

    def __init__(self, train) -> None:
        self._train = train
        self._ranks: local_ranks.LocalRanks | None = None

    def get(self) -> local_ranks.LocalRanks | None:
        """The ranks, started at the first call; None for the Spark launcher."""
        if self._ranks is None and self._train.launcher == "local":
            preload = ("pipelines.training", "horovod.tensorflow", "keras")
            env = _rank_environment(self._train)
            self._ranks = local_ranks.LocalRanks(self._train.num_proc, env, preload)
        return self._ranks

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc) -> None:
        if self._ranks is not None:
            self._ranks.__exit__(*exc)
            self._ranks = None


def launch(job: TrainJob, ranks: local_ranks.LocalRanks | None) -> list[dict]:
    """Run ``train_worker`` on ``train.num_proc`` ranks with the configured launcher: the local
    launcher's ``ranks``, started ahead (``RankPool``), or Spark tasks (``ranks`` is None).

    Raises:
        TrainingError: with the first failing rank's own exception.
    """
    train = job.config.train
    started = time.time()
    try:
        if train.launcher == "spark":
            import horovod.spark

            from pipelines.spark import get_spark

            get_spark(job.config.spark)  # horovod.spark.run runs on the active SparkContext

            try:
                results = horovod.spark.run(
                    train_worker,
                    args=(job,),
                    num_proc=train.num_proc,
                    start_timeout=train.start_timeout_s,
                    env={**os.environ, **_rank_environment(train)},
                    verbose=0,
                )
            except Exception:  # ranks that did start wait for the others: end their tasks
                get_spark(job.config.spark).sparkContext.cancelAllJobs()
                raise
        else:
            results = ranks.run(train_worker, (job,))
    except Exception as err:
        # A rank killed from outside first (the others then fail on its broken connection), then a
        # rank's own exception, then a rank that aborted (Gloo aborts a rank whose peer is gone),
        # then what the launcher said.
        killed = _killed_rank(err)
        if killed is not None and not _aborted(err):
            raise killed from err
        raise _first_rank_error(job, started) or killed or _launcher_error(err, train) from err
    return sorted(results, key=lambda result: result["rank"])


def _exited_rank(err: Exception) -> tuple[int, int] | None:
    """(rank, exit code) of the rank the local launcher saw exit first; of those seen at once, one
    that did not abort (Gloo aborts a rank whose peer is gone: the peer is the cause)."""
    if not isinstance(err, local_ranks.RankExited):
        return None
    aborts = (-signal.SIGABRT, 128 + signal.SIGABRT)
    return next((exit for exit in err.exits if exit[1] not in aborts), err.exits[0])


def _aborted(err: Exception) -> bool:
    """Whether the first rank to exit ended on SIGABRT (-6, or 134 from a shell)."""
    exited = _exited_rank(err)
    return exited is not None and exited[1] in (-signal.SIGABRT, 128 + signal.SIGABRT)


def _killed_rank(err: Exception) -> TrainingError | None:
    """The rank a signal killed (exit code -N, or 128 + N from a shell), naming the signal."""
    exited = _exited_rank(err)
    if exited is None:
        return None
    rank, code = exited
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum not in signal.valid_signals():
        return None
    return TrainingError(rank, f"the process was killed by {signal.Signals(signum).name} (exit code {code})")


def _launcher_error(err: Exception, train) -> TrainingError:
    """The launcher's own report in one line: which rank exited and how, or that the ranks never all
    started."""
    text = str(err)
    if re.search(r"Timed out waiting for .*tasks to start", text):
        return TrainingError(
            -1,
            f"not all {train.num_proc} ranks' Spark tasks started and registered within "
            f"train.start_timeout_s={train.start_timeout_s} s: the cluster has fewer free task slots "
            "than train.num_proc (one per rank)",
        )
    exited = _exited_rank(err)
    if exited is not None:
        return TrainingError(exited[0], f"the process exited with code {exited[1]}")
    return TrainingError(-1, text.strip().splitlines()[0] if text.strip() else type(err).__name__)


def _first_rank_error(job: TrainJob, since: float) -> TrainingError | None:
    folder = Catalog.for_workdir(job.config.workdir).rank_errors(job.run_id)
    reports = [p for p in folder.glob("rank-*.txt") if p.stat().st_mtime >= since - 1]
    if not reports:
        return None
    first = min(reports, key=lambda p: p.stat().st_mtime)
    return TrainingError(int(first.stem.split("-")[1]), first.read_text().splitlines()[0])


def class_weights(label_counts: list[int]) -> dict[int, float]:
    """Inverse-frequency weights that give every class the same total weight (mean weight 1)."""
    present = {label: count for label, count in enumerate(label_counts) if count}
    total = sum(present.values())
    return {label: total / (len(present) * count) for label, count in present.items()}


def run(config: PipelineConfig, pool: RankPool | None = None) -> TrainResult:
    """Plan, open (or resume) the MLflow run, train on the ranks, log the model. The local ranks come
    from ``pool`` (and stay in it) when given; else they are started here and ended with training."""
    storage.require_local(config.workdir, "training (Keras and numpy write its checkpoints as local files)")
    catalog = Catalog.for_workdir(config.workdir)
    if not catalog.transform.is_file():
        raise DataError(str(catalog.transform), "no preprocessed data: run the preprocess stage first")
    train = config.train
    train_plan = plan_shards(catalog.split("train"), train.num_proc, train.batch_size)
    validate = storage.row_group_sizes(catalog.split("val")) != []
    if validate:
        plan_shards(catalog.split("val"), train.num_proc, train.batch_size)

    preprocessed = storage.read_json(catalog.preprocess_report)
    weights = None
    if train.class_weight == "balanced":
        weights = class_weights(preprocessed["splits"]["train"]["label_counts"])
    with contextlib.ExitStack() as own:
        ranks = (pool or own.enter_context(RankPool(train))).get()
        resumed_id = tracking.resume_run(config) if train.resume else None
        run_id = resumed_id or tracking.start_run(config, preprocessed)
        tracking.record_latest_run(config, run_id)
        if resumed_id is None:
            tracking.log_data(config, run_id, storage.read_json(catalog.ingest_report), preprocessed)
            tracking.log_transform(run_id, catalog.transform)
        log.info(
            "training %d epochs on %d ranks (%s launcher), %d steps per epoch; MLflow run %s",
            train.epochs,
            train.num_proc,
            train.launcher,
            train_plan.steps_per_epoch,
            run_id,
        )
        try:
            tracking.mark_running(config.tracking_uri, run_id)
            tracking.flush_pending_metrics(config.tracking_uri, run_id, catalog.pending_metrics(run_id))
            launched = ranks.started if ranks else time.time()
            results = launch(TrainJob(config, run_id, train_plan, validate, weights), ranks)
            digests = [result["weights_digest"] for result in results]
            if len(set(digests)) != 1:  # data parallelism must leave every rank with the same model
                raise TrainingError(-1, f"ranks finished with different weights: {digests}")
            epochs_run = [result["epochs_run"] for result in results]
            if len(set(epochs_run)) != 1:  # early stopping must stop every rank at the same epoch
                raise TrainingError(-1, f"ranks ran different numbers of epochs: {epochs_run}")
            first = results[0]
        except BaseException as err:
            tracking.mark_failed(
                config.tracking_uri, run_id, "KILLED" if isinstance(err, Interrupted) else "FAILED"
            )
            raise
    try:
        tracking.flush_pending_metrics(config.tracking_uri, run_id, catalog.pending_metrics(run_id))
        tracking.log_training_outcome(config, run_id, first.get("early_stopping"))
        model_uri = tracking.log_model(config, run_id, catalog.trained_model(run_id), catalog.transform)
    except Exception as err:  # the training itself is done and kept: say how to log it later
        raise TrackingError(
            f"training finished, but MLflow at {tracking.redact(config.tracking_uri)} failed "
            f"({str(err).splitlines()[0][:200]}); the model and checkpoint are kept in "
            f"{catalog.trained_model(run_id).parent}: when the server answers, log them with "
            "dlfusion train CONFIG train.resume=true"
        ) from err
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
