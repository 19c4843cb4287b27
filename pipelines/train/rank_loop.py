"""The loop every rank runs: set up Horovod and the devices, build the kind's model, stream its
shard, checkpoint and record the epoch metrics on rank 0, export the model.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback

from pipelines.core.catalog import Catalog
from pipelines.io import atomic
from pipelines.track import runs
from pipelines.train.loader import LOADER_ERROR, InputStall, close_feeds
from pipelines.train.task import RankContext, TrainJob

log = logging.getLogger(__name__)


def train_worker(job: TrainJob) -> dict:
    """Train on this rank's shard. Returns a digest of the final weights (and on rank 0 the history)."""
    started = time.time()  # the rank's process is up and has this function
    import horovod.tensorflow as hvd

    hvd.init()
    catalog = Catalog.for_workdir(job.config.workdir)
    try:
        outcome = _train(job, hvd, catalog, started)
        # A rank may be kept for later jobs (evaluate, another training): what this one started must
        # not keep running between them. The never-ending training feed's reader threads poll, and
        # an initialised Horovod's background thread coordinates with the peers every cycle, idle or
        # not (together 8-12% of a core per idle rank, measured; 2-5% left).
        close_feeds()
        hvd.shutdown()
        return outcome
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


def _train(job: TrainJob, hvd, catalog: Catalog, started: float) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from pipelines.kinds import kind_of
    from pipelines.preprocess.transforms import load_transform
    from pipelines.runtime.logs import setup_logging, verbose
    from pipelines.train import horovod_keras as hk
    from pipelines.train.callbacks import Checkpoint, EpochClock, EpochRecorder, InputStallMeter

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
    # Every layer built from here computes in train.precision (the models keep their outputs in
    # float32); the exported model is built in float32 below.
    keras.config.set_dtype_policy(train.precision)
    model = task.build(ctx)

    checkpoint = catalog.checkpoint(job.run_id)
    initial_epoch = 0
    if rank == 0 and job.init_weights:  # the others get them from BroadcastInitialState
        _start_from(model, job.init_weights)
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
        callbacks += [Checkpoint(checkpoint), EpochRecorder(catalog.epoch_metrics(job.run_id))]
    callbacks.append(EpochClock(marks, at_end="epoch_end"))

    # The local launcher's driver shares the ranks' machine and measures it; a Spark task's rank 0
    # measures its own node.
    measured = rank == 0 and train.launcher == "spark"
    with runs.system_metrics(config.tracking_uri, job.run_id, enabled=measured):
        history = model.fit(
            train_data,
            epochs=train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=ctx.steps_per_epoch,
            callbacks=callbacks,
            shuffle=False,  # the data set shuffles row groups and rows itself
            class_weight=job.class_weight,
            verbose=2 if rank == 0 and verbose() else 0,  # else EpochRecorder's one line per epoch
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
    keras.config.set_dtype_policy("float32")  # served as before, whatever the training's precision
    atomic.write_atomically(target, task.export(ctx, model).save)
    marks["exported"] = [time.time()]
    early = stopping.summary() if stopping else None
    return {
        **outcome,
        "history": history.history,
        "early_stopping": early,
        "marks": marks,
        "compute_dtypes": sorted(compute_dtypes(model)),
    }


def compute_dtypes(layer) -> set[str]:
    """The compute dtypes of ``layer``'s layers that hold weights, nested models included."""
    if getattr(layer, "layers", None):
        return set().union(*(compute_dtypes(inner) for inner in layer.layers))
    return {layer.compute_dtype} if layer.weights else set()


def _start_from(model, keras_file: str) -> None:
    """Set ``model``'s weights to those of the Keras model in ``keras_file`` (``train.init_from``);
    when its layers differ (a changed ``model.*`` key), say so and keep the fresh weights."""
    import keras

    weights = keras.models.load_model(keras_file, compile=False).get_weights()
    shapes = [w.shape for w in weights]
    if shapes != [w.shape for w in model.get_weights()]:
        log.warning("train.init_from: its model has other layers than this one: training from scratch")
        return
    model.set_weights(weights)
    log.info("train.init_from: starting from the weights of %s", keras_file)


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
