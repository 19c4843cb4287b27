"""The ``dlfusion`` command: dlfusion STAGE CONFIG [KEY=VALUE ...]."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipelines.core import stages as stage_table
from pipelines.core.errors import ConfigError, DlfusionError, Interrupted, describe
from pipelines.core.stages import BY_NAME, STAGES
from pipelines.runtime.locking import WorkdirBusy, workdir_lock

log = logging.getLogger("dlfusion")

# Short forms of the score stage's keys: dlfusion score CONFIG model_uri=URI output=PATH
SCORE_SHORTHANDS = ("model_uri", "output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlfusion",
        description="Deep-learning pipelines: Spark -> Parquet -> Petastorm -> Horovod -> MLflow.",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for entry in STAGES:
        name = entry.name
        stage = stages.add_parser(name, help=entry.help, description=entry.help)
        stage.add_argument("config", metavar="CONFIG", help="pipeline YAML, e.g. conf/image_cnn.yaml")
        stage.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=2"
        )
        stage.add_argument("--summary-json", type=Path, metavar="PATH", help="write a JSON summary here")
        stage.add_argument(
            "-v", "--verbose", action="store_true", help="debug logging and the libraries' own output"
        )
        stage.add_argument(
            "--debug",
            action="store_true",
            help="print a failure's full trace (always in the log file)",
        )
        if not entry.always_runs:
            stage.add_argument(
                "--force", action="store_true", help="run even if nothing changed since the last success"
            )
        if name == "promote":
            stage.add_argument(
                "--override-gate",
                action="store_true",
                help="promote whatever the scores (recorded on the run)",
            )
    server = stages.add_parser(
        "mlflow-server", help="run a local MLflow tracking server (SQLite + local artifacts) until Ctrl-C"
    )
    server.add_argument(
        "--root", type=Path, default=Path("work/mlflow-server"), help="database and artifacts"
    )
    server.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless you open it)")
    server.add_argument("--port", type=int, default=5000)
    return parser


def serve_mlflow(root: Path, host: str, port: int) -> int:
    """Run ``mlflow server`` in the foreground and say how to point pipelines at it."""
    from pipelines.track import mlflow_server

    try:
        server = mlflow_server.start(root, host, port)
    except RuntimeError as err:
        print(f"dlfusion: error: {err}", file=sys.stderr)
        return 1
    url = f"http://{host}:{port}"
    print(f"MLflow server at {url} (data in {root.resolve()})")
    print(f"  use it with: dlfusion run CONFIG mlflow.tracking_uri={url}    stop with Ctrl-C")
    try:
        return server.wait()
    except KeyboardInterrupt:
        mlflow_server.stop(server)
        return 0


# Exit codes, for schedulers: documented in docs/operations.md ("Failure behaviour").
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2  # interrupted: 128 + the signal (130 SIGINT, 143 SIGTERM)
EXIT_BUSY = 75  # another run holds the workdir (EX_TEMPFAIL: try again later)


def console() -> int:
    """The ``dlfusion`` command: ``main`` with the libraries' start-up lines kept off the console."""
    return main(quiet_console=True)


def main(argv: list[str] | None = None, *, quiet_console: bool = False) -> int:
    """Run ``dlfusion ARGV``; returns the exit code. ``quiet_console``: filter this process's stderr,
    which every process it starts shares (``logs.filter_startup_noise``): for a command's own
    process only, never for a caller that owns the console (a test runner)."""
    args = build_parser().parse_args(argv)
    # MLflow's client retries an unreachable server for minutes by default; seconds are enough
    # to ride out a blip, and the pipeline says what to do when it stays down.
    for name, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ):
        os.environ.setdefault(name, value)
    if args.stage == "mlflow-server":
        return serve_mlflow(args.root, args.host, args.port)
    if args.verbose:  # library output back, here and in every process started from here
        os.environ["DLFUSION_VERBOSE"] = "1"
    from pipelines.runtime import logs

    if quiet_console:
        logs.filter_startup_noise()
    logs.setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    logs.send_thread_errors_to_trace()
    summary: dict = {"stage": args.stage, "status": "failed"}
    from pipelines.runtime import processes

    with processes.interruptible(on_signal=_cancel_spark_jobs) as stopping:
        code = _run_stage(args, summary)
        if stopping.signal_name:  # whatever surfaced while unwinding, a signal ended the run
            _stop_started_work()
            summary.update(status="killed", error=f"stopped by {stopping.signal_name}")
            code = stopping.exit_code
        if code != EXIT_OK:
            summary.setdefault("failed_stage", stage_table.running or args.stage)
    for name in ("DLFUSION_LOG_FILE", "DLFUSION_DEBUG"):  # this run's, not a later one's in this process
        os.environ.pop(name, None)
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2, default=str))
    if code:
        print(f"dlfusion: error: {summary['error']}", file=sys.stderr)
    else:
        _print_summary(summary)
    return code


def _run_stage(args: argparse.Namespace, summary: dict) -> int:
    """Run the stage into ``summary``; every failure becomes an exit code and a one-line ``error``,
    with the full trace in the run's log file (and on the console with ``--debug``)."""
    from pipelines.runtime import logs

    trace = logs.trace_logger(args.debug)
    try:
        from pipelines.pipeline.config_files import load_config

        overrides = args.overrides
        if args.stage == "score":
            overrides = [f"score.{o}" if o.split("=", 1)[0] in SCORE_SHORTHANDS else o for o in overrides]
        config = load_config(args.config, overrides)
        from pipelines.track.runs import redact

        summary.update(workdir=str(config.workdir.resolve()), tracking_uri=redact(config.tracking_uri))
        summary["log_file"] = str(logs.log_to_file(config.workdir, args.stage))
        os.environ[logs.LOG_FILE_VARIABLE] = summary["log_file"]  # the Spark JVM logs its errors there too
        if args.debug:
            os.environ["DLFUSION_DEBUG"] = "1"
        from pipelines.pipeline.runner import run_one

        if BY_NAME[args.stage].tracked:
            from pipelines.track.runs import check_reachable

            check_reachable(config.tracking_uri)
        options = {"override_gate": args.override_gate} if args.stage == "promote" else {}
        with workdir_lock(config.workdir, args.stage):
            summary.update(run_one(args.stage, config, force=getattr(args, "force", False), **options))
        if summary.get("run_id"):
            from pipelines.track.runs import ui_page

            summary["mlflow_ui_page"] = ui_page(config.tracking_uri, summary["run_id"])
        summary["status"] = "succeeded"
        return EXIT_OK
    except Interrupted as err:
        trace.debug("interrupted", exc_info=True)
        return err.exit_code
    except KeyboardInterrupt:  # SIGINT outside the CLI's own handler (e.g. before it was installed)
        trace.debug("interrupted", exc_info=True)
        summary.update(status="killed", error="stopped by SIGINT")
        return 130
    except ConfigError as err:
        summary["error"] = f"config error: {err}"
        return EXIT_CONFIG
    except WorkdirBusy as err:
        summary["error"] = str(err)
        return EXIT_BUSY
    except DlfusionError as err:
        trace.debug("failed", exc_info=True)
        summary["error"] = str(err)
    except Exception as err:
        trace.error("unexpected failure", exc_info=True)
        from pipelines.runtime.spark import explain_spark_failure  # Spark's import only when it is needed

        explained = explain_spark_failure(err)
        summary["error"] = str(explained) if explained else f"unexpected error: {describe(err)}"
        if "log_file" in summary:
            summary["error"] += f" (full trace: {summary['log_file']})"
    return EXIT_FAILED


def _cancel_spark_jobs() -> None:
    """Cancel every running Spark job: what the main thread waits for then ends at once (call it
    from another thread: the main thread's Py4J connection is busy with that very wait)."""
    from pyspark import SparkContext

    context = SparkContext._active_spark_context  # not SparkSession.getActiveSession(): per thread
    if context is not None:
        context.cancelAllJobs()


def _stop_started_work() -> None:
    """Stop every process this one started: the Spark JVM and its Python workers, the Horovod
    launcher and its ranks. PySpark's accumulator server is shut down first, as SparkContext.stop()
    does (the rest of stop() takes seconds): otherwise it prints a trace when its JVM goes away."""
    import threading

    from pipelines.runtime import processes
    from pipelines.runtime.logs import TRACE_LOGGER

    def shut_accumulators() -> None:
        from pyspark import SparkContext

        server = getattr(SparkContext._active_spark_context, "_accumulatorServer", None)
        if server is not None:
            server.shutdown()

    closer = threading.Thread(target=shut_accumulators, daemon=True)
    closer.start()
    closer.join(timeout=3)
    stopped = processes.stop_children(grace_s=2)
    logging.getLogger(TRACE_LOGGER).debug("stopped %d processes", stopped)


def _print_summary(summary: dict) -> None:
    lines = [f"dlfusion {summary['stage']}: succeeded"]
    if summary.get("skipped"):
        lines.append(f"  skipped, unchanged since their last success: {', '.join(summary['skipped'])}")
    lines += [f"  {line}" for line in summary.get("lines", [])]  # each stage's StageResult.lines
    uri, page = summary.get("tracking_uri", ""), summary.get("mlflow_ui_page")
    if uri.startswith("sqlite:///"):
        lines.append(f"  MLflow database: {uri.removeprefix('sqlite:///')}")
        lines.append(f"  browse it with: mlflow ui --backend-store-uri {uri}")
        if page:
            lines.append(f"  the run: http://127.0.0.1:5000/{page}")
    elif page:
        lines.append(f"  the run in MLflow's UI: {uri.rstrip('/')}/{page}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(console())
