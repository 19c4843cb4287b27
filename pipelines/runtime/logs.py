"""One logging setup for the CLI, the jobs and the Horovod ranks."""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings
from pathlib import Path

from pipelines.core.catalog import Catalog

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
        # The project logs its models with a signature and no input example, on purpose
        # (``tracking.log_model``); MLflow's advice to add one is not for the user.
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's usage telemetry calls out to the internet on first use; these machines have none and
    # each attempt costs seconds (measured: the train stage waited on config.mlflow-telemetry.io).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow prints "View run ... at: URI" when a run ends, with any password the URI holds.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


# Start-up lines that native code writes straight to file descriptor 2 before any log level applies
# (TensorFlow's absl and oneDNN lines, measured: TF_CPP_MIN_LOG_LEVEL does not reach them), and the
# JVM's notice about its incubator module. Horovod's launcher prefixes a rank's lines with
# ``[N]<stderr>:``, so the patterns are searched for, not anchored.
_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*\] oneDNN custom operations are on"
    r"|I0000 .* cpu_feature_guard\.cc:\d+\] "
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|^WARNING: Using incubator modules: jdk\.incubator\.vector"
)
_END_OF_CONSOLE = b"\0dlfusion-console-end\0\n"


def is_startup_noise(line: str) -> bool:
    """Whether ``line`` is one of the libraries' known start-up lines (nothing else is)."""
    return _STARTUP_NOISE.search(line) is not None


def filter_startup_noise() -> None:
    """Unless ``--verbose``, drop the libraries' known start-up lines (``is_startup_noise``) from this
    process's file descriptor 2, and so from every process started from here that shares it: the
    Spark JVM and its Python workers, the Horovod launcher and its ranks. Every other line passes
    through unchanged and in order. Call once, before anything is started."""
    if verbose() or getattr(filter_startup_noise, "installed", False):
        return
    filter_startup_noise.installed = True
    sys.stderr.flush()
    console = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as lines:
            for line in iter(lines.readline, b""):
                last = line.endswith(_END_OF_CONSOLE)
                line = line.removesuffix(_END_OF_CONSOLE) if last else line
                if line and not is_startup_noise(line.decode("utf-8", "replace")):
                    os.write(console, line)
                if last:
                    return

    forwarder = threading.Thread(target=forward, name="dlfusion-console", daemon=True)
    forwarder.start()

    def finish() -> None:
        # Whatever this process wrote reaches the console before it exits; then fd 2 is the console's.
        sys.stderr.flush()
        os.write(2, _END_OF_CONSOLE)
        forwarder.join(timeout=5)
        os.dup2(console, 2)

    atexit.register(finish)


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


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRACE_LOGGER = "dlfusion.trace"
LOG_FILE_VARIABLE = "DLFUSION_LOG_FILE"  # the run's log file, for the processes it starts


class ConsoleFormatter(logging.Formatter):
    """What a user reads on the console: the message, with ``warning:`` or ``error:`` before those
    that need attention. Times and logger names are in the run's log file (``--verbose``: here too)."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return f"{record.levelname.lower()}: {message}" if record.levelno >= logging.WARNING else message


def _console_formatter() -> logging.Formatter:
    return logging.Formatter(_FORMAT) if verbose() else ConsoleFormatter()


def trace_logger(to_console: bool = False) -> logging.Logger:
    """The logger for failure traces: to the run's log file (``log_to_file``), and to the console
    only when ``to_console`` (``--debug``)."""
    trace = logging.getLogger(TRACE_LOGGER)
    trace.propagate, trace.level = False, logging.DEBUG
    for handler in [h for h in trace.handlers if getattr(h, "dlfusion_console", False)]:
        trace.removeHandler(handler)
    if to_console:
        console = logging.StreamHandler()
        console.setFormatter(_console_formatter())
        console.dlfusion_console = True
        trace.addHandler(console)
    return trace


def send_thread_errors_to_trace() -> None:
    """An exception that ends a library's background thread (Horovod's Spark thread when its job is
    cancelled, Py4J's callbacks) goes to the trace logger, not as a trace on the console: the
    failure it belongs to is reported once, by the main thread."""
    import threading

    def log_thread_error(args) -> None:
        if args.exc_type is SystemExit:
            return
        logging.getLogger(TRACE_LOGGER).debug(
            "exception in thread %s", getattr(args.thread, "name", "?"),
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )  # fmt: skip

    threading.excepthook = log_thread_error


def log_to_file(workdir: Path, stage: str) -> Path:
    """Also log to ``workdir/logs/STAGE-TIME.log`` (this process's records and failure traces);
    creating it is the check that the workdir is writable, before any work.

    Raises:
        DataError: naming the workdir when it cannot be written.
        ConfigError: when the workdir is a URI (``s3://``): the log files need a local path.
    """
    import time

    from pipelines.core.errors import DataError
    from pipelines.core.locations import require_local

    workdir = require_local(workdir, "the dlfusion command (its lock and log files)")
    folder = Catalog.for_workdir(workdir).logs
    path = folder / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as err:
        raise DataError(
            str(Path(workdir).resolve()), f"the workdir is not writable ({err.strerror})"
        ) from None
    _attach_file(handler)
    return path


def _attach_file(handler: logging.FileHandler) -> None:
    """``handler`` as the log file of the root and trace loggers, in place of an earlier one."""
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.dlfusion_file = True
    for logger in (logging.getLogger(), logging.getLogger(TRACE_LOGGER)):
        for old in [h for h in logger.handlers if getattr(h, "dlfusion_file", False)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once; later calls only change the level."""
    quiet_library_warnings()
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_console_formatter())
        handler.addFilter(_Py4jRetryFilter())
        root.addHandler(handler)
        if os.environ.get(LOG_FILE_VARIABLE):  # a process the command started (a rank): its log too
            try:
                _attach_file(logging.FileHandler(os.environ[LOG_FILE_VARIABLE], encoding="utf-8"))
            except OSError:
                pass  # the console still has every line
    root.setLevel(level)
    for noisy in ("py4j", "petastorm", "mlflow.store.db", "alembic", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose():
        for noisy in ("mlflow", "urllib3", "absl"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
