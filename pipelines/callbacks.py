"""Keras callbacks that rank 0 runs: atomic checkpoints and per-epoch metrics to MLflow.

Imported only inside the ranks, so that the driver and the launcher never import TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from pipelines import tracking


class Checkpoint(keras.callbacks.Callback):
    """Write weights, optimizer state and the epoch count atomically at the end of each epoch."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        import numpy as np

        from pipelines.horovod_keras import state_arrays

        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        with open(staging, "wb") as handle:
            np.savez(handle, __epoch__=np.int64(epoch + 1), **state_arrays(self.model))
        os.replace(staging, self.path)


class EpochLogger(keras.callbacks.Callback):
    """Send each epoch's (rank-averaged) metrics to the MLflow run; never fails training."""

    def __init__(self, tracking_uri: str, run_id: str):
        super().__init__()
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        tracking.log_metrics(self.tracking_uri, self.run_id, metrics, step=epoch + 1)
