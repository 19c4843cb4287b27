"""A driver killed outright (SIGKILL, no cleanup) in the middle of writing a stage's output: the
previous output stays whole and readable, nothing partial is picked up, and a re-run completes."""

from __future__ import annotations

import shutil
import signal

import psutil
import pyarrow.parquet as pq
import pytest

from pipelines import storage
from pipelines.catalog import Catalog
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
    command.wait_for(r"ingest: [\d,]+/1,797 files", timeout=120)
    started = command.descendants()

    command.process.send_signal(signal.SIGKILL)
    command.finish(timeout=30)
    psutil.wait_procs(alive(started), timeout=30)  # the JVM exits when its driver's pipe closes

    after = pq.read_table(str(catalog.ingested), columns=["relpath"]).column("relpath").to_pylist()
    assert sorted(after) == sorted(before)  # the previous output, whole
    for file in storage.data_files(catalog.ingested):  # and nothing half-written inside it
        assert pq.ParquetFile(file.removeprefix("file:")).metadata.num_rows > 0
    rerun = Dlfusion(*args)
    assert rerun.finish(timeout=300) == 0, "\n".join(rerun.lines[-20:])
    assert sum(storage.row_group_sizes(catalog.ingested)) == 1797
