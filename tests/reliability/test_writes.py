"""A driver killed outright (SIGKILL, no cleanup) in the middle of writing a stage's output: the
previous output stays whole and readable, nothing partial is picked up, and a re-run completes."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from pipelines.core.catalog import Catalog
from pipelines.core.faults import FAULT_VARIABLE
from pipelines.io import parquet
from tests.reliability.conftest import Dlfusion, alive


@pytest.mark.slow
def test_a_driver_killed_mid_write_leaves_the_previous_output_and_the_rerun_completes(
    digits_workdir, tmp_path
):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    catalog = Catalog.for_workdir(workdir)
    before = pq.read_table(str(catalog.ingested), columns=["relpath"]).column("relpath").to_pylist()
    args = ("ingest", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]")
    command = Dlfusion(*args, "ingest.task_files=2")
    command.wait_until_staged(workdir / "ingest")  # the new output is being written, not committed
    started = command.descendants()

    command.process.send_signal(signal.SIGKILL)
    command.finish(timeout=30)
    psutil.wait_procs(alive(started), timeout=30)  # the JVM exits when its driver's pipe closes

    after = pq.read_table(str(catalog.ingested), columns=["relpath"]).column("relpath").to_pylist()
    assert sorted(after) == sorted(before)  # the previous output, whole
    for file in parquet.data_files(catalog.ingested):  # and nothing half-written inside it
        assert pq.ParquetFile(file.removeprefix("file:")).metadata.num_rows > 0
    rerun = Dlfusion(*args)
    assert rerun.finish(timeout=300) == 0, "\n".join(rerun.lines[-20:])
    assert sum(parquet.row_group_sizes(catalog.ingested)) == 1797


@pytest.mark.slow
def test_a_spark_task_whose_worker_dies_is_retried_and_the_output_has_no_duplicates(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    catalog = Catalog.for_workdir(workdir)
    command = Dlfusion(
        "ingest", "conf/image_cnn.yaml", f"workdir={workdir}",
        "spark.master=local[2,4]",  # two cores, a task may fail up to 4 times
        "ingest.task_files=20", "ingest.driver_increment_files=0",  # Spark tasks, not the driver
        env={FAULT_VARIABLE: "mid-task:3"},  # task 3's Python worker dies (SIGKILL) in its first attempt
    )  # fmt: skip

    assert command.finish(timeout=300) == 0, "\n".join(command.lines[-20:])
    relpaths = pq.read_table(str(catalog.ingested), columns=["relpath"]).column("relpath").to_pylist()
    assert len(relpaths) == len(set(relpaths)) == 1797
    kept = {Path(file).stem for file in parquet.data_files(catalog.ingested)}
    assert "part-00003-1" in kept and "part-00003-0" not in kept  # the retry's file, not the dead one's
    assert {name.rsplit("-", 1)[1] for name in kept - {"part-00003-1"}} == {"0"}
