"""One logging setup for the CLI, the jobs and the Horovod ranks."""

from __future__ import annotations

import logging
import os
import warnings

# petastorm 0.13.1 uses pyarrow 14 APIs that warn on every import and read; the warnings say
# nothing a user can act on, so they are silenced here, by module, and nowhere else.
_NOISY_MODULES = (r"petastorm(\..*)?", r"pyarrow(\..*)?")


def quiet_library_warnings() -> None:
    """Filter the FutureWarnings/DeprecationWarnings petastorm triggers inside pyarrow."""
    for module in _NOISY_MODULES:
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # MLflow's usage telemetry calls out to the internet on first use; these machines have none and
    # each attempt costs seconds (measured: the train stage waited on config.mlflow-telemetry.io).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class _Py4jRetryFilter(logging.Filter):
    """py4j logs a full traceback at INFO, on the root logger, each time it reconnects after a
    forked child (Horovod's launchers fork the driver) closed the shared socket; the retry that
    follows succeeds, and when it does not py4j raises, so the record alone is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO and record.getMessage() == "Exception while sending command."
        )


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; later calls only change the level."""
    quiet_library_warnings()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_Py4jRetryFilter())
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "petastorm", "mlflow.store.db", "alembic", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
