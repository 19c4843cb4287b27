"""Make the Spark driver's class archive (``driver_jvm``): ``python -m pipelines.runtime.class_archive``,
run by ``make`` (scripts/install.sh) and the image build, once per machine, JDK and Spark."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.core.config import SparkConfig
from pipelines.runtime import driver_jvm
from pipelines.runtime.spark import get_spark


def build_archive() -> Path | None:
    """Make this machine's class archive if it has none: start a driver that records the classes it
    loads, run the kinds of Spark work the stages do, and keep the archive only once its JVM has
    written it whole and a JVM with the same class path accepts it (a torn archive would crash every
    later driver). Returns the archive, or None without a JDK."""
    archive = driver_jvm.archive_path()
    if archive is None or archive.is_file():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    recording = {"spark.driver.extraJavaOptions": driver_jvm.options(record_classes=partial)}
    spark = get_spark(SparkConfig(master="local[2]", app_name="dlfusion-class-archive", conf=recording))
    jvm = spark.sparkContext._gateway.proc
    try:
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
