"""Keras callbacks of the ranks: the input-stall meter (every rank), atomic checkpoints and the
epoch metrics the driver sends to MLflow (rank 0).

Imported only inside the ranks, so that the driver and the launcher never import TensorFlow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras

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


class EpochRecorder(keras.callbacks.Callback):
    """Print each epoch's (rank-averaged) metrics in one line and record them in ``recorded`` (a JSON
    list of ``[epoch, metrics]``, rewritten atomically), from which the driver sends them to MLflow
    (``track.relay.MetricsRelay``): the ranks never import MLflow."""

    def __init__(self, recorded: Path):
        super().__init__()
        self.recorded = Path(recorded)
        self.epochs: list = []
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import psutil

        from pipelines.io.atomic import write_json_atomically

        if logs is not None:  # rank 0's resident memory, per epoch: growth shows in the run's charts
            logs["memory_rss_mb"] = psutil.Process().memory_info().rss / 2**20
        metrics = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        total = self.params.get("epochs", "?")
        log.info("epoch %d/%s: %s (%.1f s)", epoch + 1, total, shown, time.monotonic() - self.started)
        self.epochs.append([epoch + 1, metrics])
        write_json_atomically(self.epochs, self.recorded)
