"""Progress of long Spark work as plain log lines (done of total, rate), and the Spark jobs it took."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

log = logging.getLogger("dlfusion.progress")

INTERVAL_S = 3.0


@dataclass
class StageProgress:
    """What a stage's Spark work did: filled in while it runs and when it ends."""

    name: str
    total: int
    unit: str
    jobs: int = 0
    seconds: float = 0.0
    phase: str = ""
    done: int = 0  # driver work only (``driver_stage``): what the work says it has done
    _started: float = field(default_factory=time.monotonic, repr=False)


@contextmanager
def spark_stage(
    spark: SparkSession, name: str, total: int, unit: str, interval_s: float = INTERVAL_S
) -> Iterator[StageProgress]:
    """Tag the Spark jobs run inside with ``name`` and log, every ``interval_s`` seconds, how much of
    the running Spark stage is done, in ``unit`` (scaled from its finished tasks out of ``total``).

    Set ``.phase`` on the yielded object to say what is running. On exit the number of Spark jobs
    and the time are logged and kept on the object.
    """
    context = spark.sparkContext
    group = f"dlfusion-{name}-{time.monotonic_ns()}"
    context.setJobGroup(group, f"dlfusion {name}", interruptOnCancel=True)
    progress = StageProgress(name, total, unit)
    stop = threading.Event()
    reporter = threading.Thread(
        target=_report, args=(context, group, progress, stop, interval_s), daemon=True
    )
    reporter.start()
    try:
        yield progress
    except BaseException as err:
        stop.set()
        reporter.join()
        # Interrupted (not an Exception): this thread's Py4J call was cut mid-way, so no more calls.
        if isinstance(err, Exception):  # failed: later jobs must not join this stage's group
            _leave_group(context)
        raise
    stop.set()
    reporter.join()
    progress.jobs = len(context.statusTracker().getJobIdsForGroup(group))
    progress.seconds = time.monotonic() - progress._started
    _leave_group(context)
    log.info("%s: %d %s in %.1f s, %d Spark jobs", name, total, unit, progress.seconds, progress.jobs)


@contextmanager
def driver_stage(name: str, total: int, unit: str, interval_s: float = INTERVAL_S) -> Iterator[StageProgress]:
    """``spark_stage`` for work done in the driver process itself, without Spark: while it runs, the
    ``done`` it sets on the yielded object is logged every ``interval_s`` seconds; on exit the time
    is logged and kept on the object (``jobs`` stays 0)."""
    progress = StageProgress(name, total, unit)
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(interval_s):
            if progress.done:
                _log_rate(progress, progress.done, time.monotonic() - progress._started)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        yield progress
    finally:
        stop.set()
        reporter.join()
    progress.seconds = time.monotonic() - progress._started
    log.info("%s: %d %s in %.1f s, in the driver (no Spark job)", name, total, unit, progress.seconds)


def stage_progress(spark: SparkSession | None, name: str, total: int, unit: str):
    """``spark_stage`` for work that runs on ``spark``; ``driver_stage`` when there is none."""
    return driver_stage(name, total, unit) if spark is None else spark_stage(spark, name, total, unit)


def _leave_group(context) -> None:
    context.setLocalProperty("spark.jobGroup.id", None)
    context.setLocalProperty("spark.job.description", None)


def _report(context, group: str, progress: StageProgress, stop: threading.Event, interval_s: float) -> None:
    tracker = context.statusTracker()
    last_stage, stage_started = None, time.monotonic()
    while not stop.wait(interval_s):
        try:
            stages = [
                info
                for job in tracker.getJobIdsForGroup(group)
                if (job_info := tracker.getJobInfo(job)) and job_info.status == "RUNNING"
                for stage in job_info.stageIds
                if (info := tracker.getStageInfo(stage)) and info.numActiveTasks + info.numCompletedTasks
            ]
        except Exception:  # the session is stopping; progress is best effort
            return
        if not stages:
            continue
        stage = max(stages, key=lambda info: info.numTasks)
        if stage.stageId != last_stage:  # a new stage: its rate is known from the next tick on
            last_stage, stage_started = stage.stageId, time.monotonic()
            continue
        done = progress.total * stage.numCompletedTasks // max(stage.numTasks, 1)
        _log_rate(progress, done, time.monotonic() - stage_started)


def _log_rate(progress: StageProgress, done: int, elapsed: float) -> None:
    phase = f" {progress.phase}" if progress.phase else ""
    log.info(
        "%s%s: %s/%s %s (%d%%), %s %s/s",
        progress.name,
        phase,
        f"{done:,}",
        f"{progress.total:,}",
        progress.unit,
        100 * done // max(progress.total, 1),
        f"{done / max(elapsed, 1e-3):,.0f}",
        progress.unit,
    )
