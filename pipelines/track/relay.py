"""Epoch metrics from the ranks to MLflow, sent by the driver: rank 0 records each epoch's metrics
in a file of the workdir, and a thread of the driver, which holds the run and waits while the ranks
train, sends them.

Why not from rank 0 itself: importing MLflow and opening its store there took 2.5 s of rank 0's
set-up (rank 1 waited for it at the first broadcast), on the critical path of every training.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pipelines.io.atomic import read_json, write_json_atomically
from pipelines.track.runs import send_metrics

log = logging.getLogger(__name__)


class MetricsRelay:
    """While the block runs, send the epochs rank 0 records in ``recorded`` (a JSON list of
    ``[epoch, metrics]``, rewritten atomically every epoch) to the run, each new epoch as it comes.

    Never fails training: after a failed send, later ones try once per new epoch; what the server
    has not taken when the block ends is kept in ``pending`` (``runs.flush_pending_metrics`` sends
    it, or raises when the server still does not answer).
    """

    def __init__(
        self, tracking_uri: str, run_id: str, recorded: Path, pending: Path, interval_s: float = 0.5
    ):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.recorded, self.pending = Path(recorded), Path(pending)
        self.interval_s = interval_s
        self._sent = 0  # epochs of ``recorded`` the server took
        self._tried = 0  # epochs of ``recorded`` seen at the last try
        self._failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="dlfusion-metrics-relay", daemon=True)

    def __enter__(self) -> MetricsRelay:
        self.recorded.unlink(missing_ok=True)  # an earlier attempt's: its epochs were sent or kept
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        unsent = self._recorded()[self._sent :]
        if unsent and (self._failed or not self._send(unsent, attempts=3)):
            kept = read_json(self.pending) if self.pending.is_file() else []
            write_json_atomically(kept + unsent, self.pending)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            recorded = self._recorded()
            if len(recorded) > self._tried:  # a new epoch: try (again) to send what is unsent
                self._tried = len(recorded)
                self._send(recorded[self._sent :], attempts=1 if self._failed else 3)

    def _send(self, epochs: list, attempts: int) -> bool:
        self._failed = not send_metrics(
            self.tracking_uri, self.run_id, [(int(s), m) for s, m in epochs], attempts
        )
        if not self._failed:
            self._sent += len(epochs)
        return not self._failed

    def _recorded(self) -> list:
        return read_json(self.recorded) if self.recorded.is_file() else []
