"""The Spark driver JVM's options, and the archive of its classes that halves its start.

A Spark driver loads some ten thousand classes from about 250 jars before its first job: about 4 s
of a small command's 8 s on two cores, measured here (a session and one small job, 7.5-8.7 s
without the archive, 4.0-4.3 s with it). Java's class-data sharing (CDS) maps them from an archive
instead. The archive is made once per machine, JDK and Spark (``python -m
pipelines.runtime.driver_jvm``, run by ``make`` and the image build; about 30 s), kept in the user's
cache, and used by every later driver that ``get_spark`` starts. Without one, drivers start as they
always did. A driver started by ``spark-submit`` has its JVM before this code runs, and is unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.core.locations import cache_folder
from pipelines.runtime.logs import verbose

# The driver plans and schedules; rows are handled by executors and Python workers. Its optimising
# JIT compiler (C2) took a fifth of a core through a whole image stage here, and G1 grew its heap
# with the run's length (RSS +12% from 8,000 to 32,000 files; flat with the serial collector). In
# local mode the executors are that JVM too: text preprocess of 200,000 reviews took the same 30 s
# with and without these (benchmarks/README.md).
_BASE_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def options(record_classes: Path | None = None) -> str:
    """``spark.driver.extraJavaOptions`` for a driver this process starts: the compiler and collector
    above, the class archive when this machine has one (or, with ``record_classes``, a new archive
    written there at exit), and the log4j settings (quiet, or errors to the run's log file; Spark's
    own with ``--verbose``)."""
    options = _BASE_OPTIONS
    archive = archive_path()
    if record_classes is not None:
        options += f" -XX:ArchiveClassesAtExit={record_classes} -Xlog:cds=off -Xlog:cds+dynamic=off"
    elif archive is not None and archive.is_file():
        options += f" -XX:SharedArchiveFile={archive}"
    if verbose():  # Spark's own logging
        return options
    log_file = os.environ.get("DLFUSION_LOG_FILE")
    if log_file and os.environ.get("DLFUSION_DEBUG") != "1":  # errors into the run's log file
        settings = Path(__file__).with_name("log4j2-file.properties")
        options += f" -Ddlfusion.logfile={log_file}"
    else:  # errors only, on the console
        settings = Path(__file__).with_name("log4j2-quiet.properties")
    return options + f" -Dlog4j2.configurationFile={settings.as_uri()}"


def archive_path() -> Path | None:
    """This machine's class archive for the JDK that Spark would start and this Spark's jars (a
    name that changes with either), or None when no JDK is found."""
    import pyspark

    java_home = os.environ.get("JAVA_HOME")  # what spark-class runs, as it chooses
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        return None
    java = Path(java).resolve()
    stat = java.stat()
    jars = Path(pyspark.__file__).resolve().parent / "jars"
    identity = f"{java}:{stat.st_size}:{stat.st_mtime_ns}:{pyspark.__version__}:{jars}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return cache_folder() / "spark-driver" / f"classes-{pyspark.__version__}-{key}.jsa"


def build_archive() -> Path | None:
    """Make this machine's class archive if it has none: start a driver that records the classes it
    loads, run the kinds of Spark work the stages do, and keep the archive only once its JVM has
    written it whole and a JVM with the same class path accepts it (a torn archive would crash every
    later driver). Returns the archive, or None without a JDK."""
    from pyspark.sql import SparkSession

    archive = archive_path()
    if archive is None or archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers need this stack, as in get_spark
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("dlfusion-class-archive")
        .config("spark.driver.extraJavaOptions", options(record_classes=partial))
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    jvm = spark.sparkContext._gateway.proc
    try:
        spark.sparkContext.setLogLevel("ERROR")
        _typical_work(spark, partial.with_suffix(".work"))
        class_path = spark.sparkContext._jvm.System.getProperty("java.class.path")
        java = spark.sparkContext._jvm.System.getProperty("java.home")
    finally:
        spark.stop()
        shutil.rmtree(partial.with_suffix(".work"), ignore_errors=True)
        spark.sparkContext._gateway.shutdown()
        jvm.stdin.close()  # the gateway JVM exits when its input closes, and writes the archive then
        if jvm.wait(timeout=300) != 0 or sys.exc_info()[0] is not None:
            partial.unlink(missing_ok=True)
    check = subprocess.run(
        [str(Path(java, "bin", "java")), f"-XX:SharedArchiveFile={partial}", "-Xshare:on"]
        + ["-cp", class_path, "-version"],
        capture_output=True,
        text=True,
    )
    if not partial.is_file() or check.returncode != 0:
        partial.unlink(missing_ok=True)
        said = f"{check.stdout} {check.stderr}".strip().replace("\n", " ")
        raise RuntimeError(f"no class archive: the driver JVM exited with {jvm.returncode}; {said}")
    os.replace(partial, archive)  # whole or absent, for drivers starting at the same time
    return archive


def _binary_lengths(batches):
    """Arrow batches of (id, data) -> (id, length of data), in Spark's Python workers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for batch in batches:
        size = pc.binary_length(batch.column("data"))
        yield pa.RecordBatch.from_pydict({"id": batch.column("id"), "n": size})


def _typical_work(spark, folder: Path) -> None:
    """Spark work of the kinds the stages do, so that their classes are in the archive: Python rows
    and binary columns, partitioned Parquet written and read with file metadata, Arrow batches
    through Python, a shuffle, and text read as CSV."""

    rows = [(i, f"c{i % 3}", bytes([i % 256]) * 16) for i in range(200)]
    frame = spark.createDataFrame(rows, "id long, label string, data binary")
    frame.repartition(2).write.partitionBy("label").parquet(str(folder / "table"))
    read = spark.read.parquet(str(folder / "table")).select("*", "_metadata.file_path")

    read.mapInArrow(_binary_lengths, "id long, n int").groupBy("n").count().collect()
    read.groupBy("label").count().toPandas()
    (folder / "text.tsv").write_text("".join(f"{i}\treview {i}\n" for i in range(50)))
    spark.read.csv(str(folder / "text.tsv"), sep="\t").count()


if __name__ == "__main__":
    made = build_archive()
    print(f"Spark driver class archive: {made}" if made else "no JDK found: no Spark driver class archive")
