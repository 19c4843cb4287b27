"""A driver killed outright (SIGKILL, no cleanup) in the middle of writing a stage's output: the
previous output stays whole and readable, nothing partial is picked up, and a re-run completes."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

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


@pytest.mark.slow
def test_a_spark_task_whose_worker_dies_is_retried_and_the_output_has_no_duplicates(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    catalog = Catalog.for_workdir(workdir)
    command = Dlfusion(
        "ingest", "conf/image_cnn.yaml", f"workdir={workdir}",
        "spark.master=local[2,4]",  # two cores, a task may fail up to 4 times
        "ingest.task_files=20",
    )  # fmt: skip
    command.wait_for(r"ingest: [\d,]+/1,797 files", timeout=120)
    kills = 0
    for _ in range(40):  # kill one busy Python worker (forked by the daemon for a task)...
        busy = [p for p in _python_workers(command) if p.cpu_percent(interval=0.05) > 0]
        if busy and kills < 3:  # at most 3 in all: no task can reach Spark's 4 failures
            busy[0].send_signal(signal.SIGKILL)
            kills += 1
        time.sleep(0.5)
        if list((workdir / "ingest").glob(".tmp-*/*/part-*-[1-9].parquet")):  # ...until a retry wrote
            break

    assert command.finish(timeout=300) == 0, "\n".join(command.lines[-20:])
    relpaths = pq.read_table(str(catalog.ingested), columns=["relpath"]).column("relpath").to_pylist()
    assert len(relpaths) == len(set(relpaths)) == 1797
    attempts = {int(Path(file).stem.rsplit("-", 1)[1]) for file in storage.data_files(catalog.ingested)}
    assert max(attempts) >= 1  # some task's first attempt died; only the retry's file was kept


def _python_workers(command: Dlfusion) -> list:
    """The Python workers running Spark tasks: the daemon's forked children (not the daemon)."""
    workers = []
    for process in command.descendants():
        try:
            if "pipelines.spark_daemon" in " ".join(process.cmdline()) and not process.children():
                parent = process.parent()
                if parent is not None and "pipelines.spark_daemon" in " ".join(parent.cmdline()):
                    workers.append(process)
        except psutil.Error:  # ended meanwhile
            continue
    return workers
