"""The SparkSession factory: local[*] by default, the config's master, and spark-submit's master wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.cli import clean_env


def test_session_has_arrow_on_and_the_configured_master(spark):
    assert spark.sparkContext.master == "local[2]"
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"


def test_the_driver_jvm_starts_from_this_machines_class_archive(spark, monkeypatch, tmp_path):
    """``make`` made the archive (scripts/install.sh); the session's JVM maps it, and a driver of a
    machine without one starts without it."""
    from pipelines.runtime import class_archive, driver_jvm

    archive = driver_jvm.archive_path()
    assert archive is not None and archive.is_file(), "make (scripts/install.sh) makes it"
    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert f"-XX:SharedArchiveFile={archive}" in list(runtime.getInputArguments())
    monkeypatch.setenv("DLFUSION_VERBOSE", "1")  # Spark's own logging, the archive kept
    assert driver_jvm.options().endswith(f"-XX:SharedArchiveFile={archive}")
    monkeypatch.setenv("DLFUSION_CACHE", str(tmp_path))
    assert "SharedArchiveFile" not in driver_jvm.options()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # no JDK there: no archive to make or use
    assert driver_jvm.archive_path() is None and class_archive.build_archive() is None


@pytest.mark.slow  # a JVM recording its classes, and writing them out (30 s)
def test_the_class_archive_is_made_whole_once_as_make_does(tmp_path):
    command = [sys.executable, "-m", "pipelines.runtime.class_archive"]
    made = subprocess.run(
        command, cwd=ROOT, env=clean_env(DLFUSION_CACHE=str(tmp_path)), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-3000:]
    archives = list((tmp_path / "spark-driver").iterdir())
    assert [path.name for path in archives] == [made.stdout.split("/")[-1].strip()]  # no partial one left
    assert archives[0].stat().st_size > 50_000_000  # Spark's classes, written whole (the JVM checked it)
    written = archives[0].stat().st_mtime_ns
    again = subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env(DLFUSION_CACHE=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.stdout == made.stdout and archives[0].stat().st_mtime_ns == written  # made once


@pytest.mark.slow
def test_spark_submit_master_is_never_overridden(tmp_path):
    spark_submit = Path(sys.executable).with_name("spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [
            str(spark_submit),
            "--master",
            "local[1]",
            "jobs/ingest.py",
            "conf/image_cnn.yaml",
            f"workdir={tmp_path}",
            "spark.master=local[2]",
            "ingest.driver_increment_files=0",  # Spark tasks (1,797 files would be read in the driver)
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr into its stdout.
    assert "master local[1]" in result.stdout
    assert "files seen 1797 = written 1797 + quarantined 0" in result.stdout


def test_jvm_out_of_memory_becomes_one_line_naming_the_setting(spark):
    from pipelines.runtime.spark import explain_spark_failure

    with pytest.raises(Exception, match="OutOfMemoryError") as raised:
        spark.sparkContext._jvm.java.nio.ByteBuffer.allocate(2**31 - 1)  # > the 1 GB default heap
    explained = explain_spark_failure(raised.value)
    assert explained is not None and "\n" not in str(explained)
    assert "spark.driver.memory" in str(explained) and "spark.executor.memory" in str(explained)
    assert explain_spark_failure(ValueError("something else")) is None


@pytest.mark.parametrize(
    "master, conf, cores, local",
    [
        ("local", {}, 1, True),
        ("local[3]", {}, 3, True),
        ("local[4,2]", {}, 4, True),
        ("local[*]", {}, len(os.sched_getaffinity(0)), True),
        (None, {}, len(os.sched_getaffinity(0)), True),
        ("local-cluster[2,3,1024]", {}, 6, True),
        ("spark://10.0.0.1:7077", {}, len(os.sched_getaffinity(0)), False),
        ("local[2]", {"spark.master": "yarn"}, len(os.sched_getaffinity(0)), False),
        ("local[2]", {"spark.default.parallelism": "16"}, 16, True),
    ],
)
def test_the_master_and_its_cores_are_known_without_starting_spark(monkeypatch, master, conf, cores, local):
    """What ingest plans its tasks for in the driver, and where evaluate scores, as get_spark would
    resolve the master (spark.conf over spark.master); no session is started for it."""
    from pyspark.sql import SparkSession

    from pipelines.core.config import SparkConfig
    from pipelines.runtime.spark import planned_cores, runs_locally

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    config = SparkConfig(master=master, conf=conf)
    assert (planned_cores(config), runs_locally(config)) == (cores, local)
