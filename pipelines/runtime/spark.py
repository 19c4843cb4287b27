"""The one SparkSession factory."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from pipelines.core.config import SparkConfig
from pipelines.core.errors import DlfusionError, ResourceError
from pipelines.io import spark_writes
from pipelines.runtime import driver_jvm
from pipelines.runtime.logs import verbose

log = logging.getLogger(__name__)

# Bytes of rows Spark holds per batch, in a columnar Parquet read or an Arrow batch to Python.
BATCH_BYTES = 16 * 1024 * 1024


def get_spark(config: SparkConfig) -> SparkSession:
    """Return the active SparkSession, or build one from ``config``.

    The master comes from spark-submit when it set one (never overridden), else from
    ``spark.conf``'s ``spark.master`` or ``spark.master``, else ``local[*]``; a local one listens
    on loopback only. Arrow is on and logs are quiet.
    """
    # Executors must run the same interpreter as the driver (it has our pinned stack).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(config.app_name)
    # spark-submit starts the JVM gateway first and always has a master: never override it.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = _configured_master(config)
        builder = builder.master(master)
        if master.startswith("local"):  # nothing else needs to reach it: listen on loopback only
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the web UI's address
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
                "spark.driver.host", "127.0.0.1"
            )
    builder = (
        builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        # Writes partitioned by outcome or split keep one writer per value open instead of sorting
        # every row by it first (a sort holds rows in memory and spills).
        .config("spark.sql.maxConcurrentOutputFileWriters", "4")
        # Arrow batches to Python workers are cut by bytes too, not only by rows (10,000 rows of
        # 224x224x3 pixels would be 1.5 GB).
        .config("spark.sql.execution.arrow.maxBytesPerBatch", str(BATCH_BYTES))
        # Python workers without a per-task cost of about 0.25 s of CPU (see the module).
        .config("spark.python.daemon.module", "pipelines.runtime.spark_daemon")
        # The compiler, collector and class archive of the driver JVM (driver_jvm), and its logging.
        .config("spark.driver.extraJavaOptions", driver_jvm.options())
    )
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    on_interrupt = signal.getsignal(signal.SIGINT)
    spark = builder.getOrCreate()
    if threading.current_thread() is threading.main_thread():
        # PySpark replaces the SIGINT handler with its own (cancel, KeyboardInterrupt); the CLI's
        # handler already stops Spark, and everything else, the same way for SIGINT and SIGTERM.
        signal.signal(signal.SIGINT, on_interrupt)
    spark.sparkContext.setLogLevel("WARN" if verbose() else "ERROR")
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def planned_cores(config: SparkConfig) -> int:
    """The cores Spark's tasks would get (its default parallelism), without starting it: the active
    session's; else ``spark.default.parallelism`` when set; else the master's (``local[N]`` N,
    ``local-cluster[N,C,M]`` N x C, ``local[*]`` or any cluster master this process's CPUs)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active.sparkContext.defaultParallelism
    if "spark.default.parallelism" in config.conf:
        return int(config.conf["spark.default.parallelism"])
    master = resolved_master(config)
    cluster = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    if cluster:
        return int(cluster.group(1)) * int(cluster.group(2))
    local = re.fullmatch(r"local(?:\[(\d+)(?:,\d+)?\])?", master)
    if local:
        return int(local.group(1) or 1)
    return len(os.sched_getaffinity(0))  # what the JVM counts too (taskset, container CPU sets)


def resolved_master(config: SparkConfig) -> str:
    """The master a session would get, as ``get_spark`` resolves it, without starting one:
    spark-submit's (read from its running JVM), else ``spark.conf``'s or ``spark.master``, else
    ``local[*]``."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        SparkContext._ensure_initialized()  # spark-submit's gateway: connects, creates no context
        submitted = SparkConf().get("spark.master", None)
        if submitted:
            return submitted
    return _configured_master(config)


def _configured_master(config: SparkConfig) -> str:
    """The master this process asks for when spark-submit has not set one: ``spark.conf``'s
    ``spark.master`` (it is applied after ``spark.master``, so it wins), else ``spark.master``,
    else ``local[*]``."""
    return config.conf.get("spark.master") or config.master or "local[*]"


def runs_locally(config: SparkConfig) -> bool:
    """Whether Spark's tasks run on this machine (a ``local`` master), known without starting Spark."""
    active = SparkSession.getActiveSession()
    master = active.sparkContext.master if active is not None else resolved_master(config)
    return master.startswith("local")


def size_batches(spark: SparkSession, row_bytes: int, batch_bytes: int = BATCH_BYTES) -> int:
    """Set the rows per columnar Parquet read batch and per Arrow batch so that a batch of rows of
    about ``row_bytes`` holds about ``batch_bytes`` (Spark's defaults, 4,096 and 10,000 rows, are
    600 MB and 1.5 GB for 224x224 images). Returns the rows per batch."""
    rows = max(16, batch_bytes // max(row_bytes, 1))
    spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", str(min(rows, 4096)))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(rows, 10_000)))
    return rows


def explain_spark_failure(err: BaseException) -> DlfusionError | None:
    """A one-line, actionable error for a Spark failure caused by memory or by a URI whose file system
    Spark cannot reach, or None for anything else."""
    text = str(err)
    missing = re.search(r'No FileSystem for scheme "?([A-Za-z0-9+.-]+)', text)
    if missing:
        return spark_writes.missing_hadoop_filesystem(f"{missing.group(1)}://")
    if any(sign in text for sign in ("OutOfMemoryError", "Java heap space", "GC overhead limit exceeded")):
        return ResourceError(
            "Spark ran out of JVM heap: raise spark.driver.memory (local mode: the executors run inside "
            "the driver) or spark.executor.memory (cluster), e.g. spark.conf.spark.driver.memory=4g; or "
            "lower ingest.batch_bytes / preprocess.rows_per_row_group"
        )
    if "MemoryError" in text or "exit code 137" in text or "Python worker exited unexpectedly" in text:
        return ResourceError(
            "a Spark Python worker ran out of memory or was killed: raise spark.executor.memoryOverhead "
            "(or set spark.executor.pyspark.memory), or lower ingest.batch_bytes / ingest.task_files"
        )
    return None
