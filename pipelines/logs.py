"""One logging setup for the CLI, the jobs and the Horovod ranks."""

from __future__ import annotations

import logging
import os
import warnings

# petastorm 0.13.1 uses pyarrow 14 APIs that warn on every import and read; the warnings say
# nothing a user can act on, so they are silenced here, by module, and nowhere else.
_NOISY_MODULES = (r"petastorm(\..*)?", r"pyarrow(\..*)?")


def verbose() -> bool:
    """Whether the user asked for library output (``dlfusion --verbose``; inherited by ranks)."""
    return os.environ.get("DLFUSION_VERBOSE") == "1"


def quiet_library_warnings() -> None:
    """Filter library noise a user cannot act on, unless ``--verbose``: the FutureWarnings that
    petastorm triggers inside pyarrow, MLflow's advice about our own pyfunc classes, its log lines
    and artifact-download progress bars, TensorFlow's start-up lines."""
    for module in _NOISY_MODULES:
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not verbose():
        drop_type_hint_advice()
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's usage telemetry calls out to the internet on first use; these machines have none and
    # each attempt costs seconds (measured: the train stage waited on config.mlflow-telemetry.io).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def drop_type_hint_advice() -> None:
    """Unless ``--verbose``, drop MLflow's advice to add type hints to ``predict``, given for every
    PythonModel subclass when it is defined: in the driver, the ranks and every UDF worker."""
    if not verbose():
        _drop_shown_warnings_about("Add type hints to the `predict` method")


def _drop_shown_warnings_about(text: str) -> None:
    """Drop warnings that contain ``text`` where they are shown: MLflow issues its advice on
    PythonModel subclasses under its own ``simplefilter("once")``, which filters cannot override."""
    shown = warnings.showwarning
    if getattr(shown, "dropping", None) == text:
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if text not in str(message):
            shown(message, category, filename, lineno, file, line)

    showwarning.dropping = text
    warnings.showwarning = showwarning


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
    if not verbose():
        for noisy in ("mlflow", "urllib3", "absl"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
