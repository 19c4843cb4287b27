"""Keras callbacks of the ranks: the input-stall meter (every rank), atomic checkpoints and
per-epoch metrics to MLflow (rank 0).

Imported only inside the ranks, so that the driver and the launcher never import TensorFlow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras

from pipelines.track import runs

log = logging.getLogger("dlfusion.train")


class EpochClock(keras.callbacks.Callback):
    """Append ``time.time()`` to ``marks[at_begin]`` when an epoch begins and to ``marks[at_end]``
    when it ends. Placed between other callbacks, clocks split an epoch into the training steps and
    each callback's epoch-end work (validation, averaging, checkpoint, MLflow)."""

    def __init__(self, marks: dict[str, list[float]], at_begin: str | None = None, at_end: str | None = None):
        super().__init__()
        self.marks, self.at_begin, self.at_end = marks, at_begin, at_end
        for name in (at_begin, at_end):
            if name:
                marks.setdefault(name, [])

    def on_epoch_begin(self, epoch, logs=None):
        if self.at_begin:
            self.marks[self.at_begin].append(time.time())

    def on_epoch_end(self, epoch, logs=None):
        if self.at_end:
            self.marks[self.at_end].append(time.time())


class InputStallMeter(keras.callbacks.Callback):
    """Add ``input_stall`` to each epoch's logs: the fraction of the epoch's time this rank's
    training steps waited for the loader's next batch (``data_loading.InputStall``). Near 0, the
    loader keeps ahead; a large value means the loader, not the model, bounds training."""

    def __init__(self, stall):
        super().__init__()
        self.stall, self.started = stall, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.stall.take()
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["input_stall"] = self.stall.take() / max(time.monotonic() - self.started, 1e-9)


class Checkpoint(keras.callbacks.Callback):
    """Write weights, optimizer state and the epoch count atomically at the end of each epoch."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        import numpy as np

        from pipelines.core.errors import DataError
        from pipelines.io.atomic import write_npz_atomically
        from pipelines.train.horovod_keras import state_arrays

        try:
            write_npz_atomically(self.path, __epoch__=np.int64(epoch + 1), **state_arrays(self.model))
        except OSError as err:  # disk full, permissions: say so, and that the last one is intact
            problem = f"cannot write the checkpoint ({err.strerror or err}); the previous one is kept"
            raise DataError(str(self.path), problem) from err


class EpochLogger(keras.callbacks.Callback):
    """Send each epoch's (rank-averaged) metrics to the MLflow run; never fails training.

    Metrics the server does not take are kept in ``pending`` (JSON, rewritten atomically) and sent
    with the next epoch's, at the end, or by the driver when the server answers again. Once a send
    has failed, later ones try once instead of retrying (9 s an epoch here): nothing is lost, the
    metrics wait with the kept ones, and the driver retries in full after the ranks.
    """

    def __init__(self, tracking_uri: str, run_id: str, pending: Path):
        super().__init__()
        self.tracking_uri, self.run_id, self.pending = tracking_uri, run_id, Path(pending)
        self.unsent: list = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_train_begin(self, logs=None):
        if self.pending.is_file():  # kept by an earlier attempt of this run
            from pipelines.io.atomic import read_json

            self.unsent = read_json(self.pending)

    def on_epoch_end(self, epoch, logs=None):
        import psutil

        if logs is not None:  # rank 0's resident memory, per epoch: growth shows in the run's charts
            logs["memory_rss_mb"] = psutil.Process().memory_info().rss / 2**20
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        total = self.params.get("epochs", "?")
        log.info("epoch %d/%s: %s (%.1f s)", epoch + 1, total, shown, time.monotonic() - self.started)
        self.unsent.append([epoch + 1, metrics])
        self._send()

    def on_train_end(self, logs=None):
        if self.unsent:
            self._send()

    def _send(self):
        from pipelines.io.atomic import write_json_atomically

        attempts = 1 if self.pending.is_file() else 3  # the server did not answer the last time
        if runs.send_metrics(self.tracking_uri, self.run_id, list(self.unsent), attempts):
            self.unsent = []
            self.pending.unlink(missing_ok=True)
        else:
            write_json_atomically(self.unsent, self.pending)
