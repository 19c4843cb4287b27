"""SIGTERM (cron, Airflow, Kubernetes) and SIGINT to the dlfusion process alone, during Spark work and
during training: everything it started stops within seconds, the exit code and the summary say so,
the MLflow run is KILLED and the last complete outputs are kept."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipelines.core.catalog import Catalog
from pipelines.io import atomic, parquet
from tests.reliability.conftest import Dlfusion, alive

SIGNALS = [pytest.param(signal.SIGTERM, 143, id="SIGTERM"), pytest.param(signal.SIGINT, 130, id="SIGINT")]


def _stop(command: Dlfusion, signum: int) -> tuple[int, float, list]:
    """Signal the dlfusion process alone; return its exit code, seconds to exit, and its former
    descendants still alive shortly after."""
    started = command.descendants()
    assert started, "dlfusion had started no process yet"
    sent = time.monotonic()
    os.kill(command.process.pid, signum)
    code = command.finish(timeout=60)
    seconds = time.monotonic() - sent
    deadline = time.monotonic() + 5
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    return code, seconds, alive(started)


def _summary(path) -> dict:
    return json.loads(path.read_text())


def _start(stage: str, digits_workdir, tmp_path, *overrides: str) -> tuple[Dlfusion, object, object]:
    """``dlfusion STAGE`` on a private copy of the digits workdir; (command, workdir, summary path)."""
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    summary = tmp_path / "summary.json"
    args = (stage, "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]", *overrides)
    return Dlfusion(*args, "--summary-json", str(summary)), workdir, summary


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", SIGNALS)
def test_a_signal_during_ingest_stops_spark_and_keeps_the_previous_output(
    digits_workdir, tmp_path, signum, exit_code
):
    before = sum(parquet.row_group_sizes(Catalog.for_workdir(digits_workdir).ingested))
    # ingest.task_files=2: hundreds of Spark tasks (not in the driver), so the job is still running
    # when signalled
    overrides = ("ingest.task_files=2", "ingest.driver_increment_files=0")
    command, workdir, summary = _start("ingest", digits_workdir, tmp_path, *overrides)
    catalog = Catalog.for_workdir(workdir)
    command.wait_until_staged(workdir / "ingest")

    code, seconds, left = _stop(command, signum)

    assert code == exit_code
    assert seconds < 20, f"took {seconds:.1f} s to stop"
    assert not left, f"left running: {[p.pid for p in left]}"
    name = signal.Signals(signum).name
    assert command.error_lines[-1].startswith(f"dlfusion: error: stopped by {name}")
    assert len(command.error_lines) == 1 and not [line for line in command.lines if "Traceback" in line]
    result = _summary(summary)
    assert (result["status"], result["failed_stage"], result["error"]) == (
        "killed",
        "ingest",
        f"stopped by {name}",
    )
    assert sum(parquet.row_group_sizes(catalog.ingested)) == before  # the last complete output is intact
    assert pq.read_table(str(catalog.ingested), columns=["relpath"]).num_rows == before


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", SIGNALS)
def test_a_signal_during_training_stops_every_rank_and_marks_the_run_killed(
    digits_workdir, tmp_path, signum, exit_code
):
    command, workdir, summary = _start("train", digits_workdir, tmp_path, "train.epochs=50")
    command.wait_for(r"epoch 1/50", timeout=240)
    ranks = [p for p in command.descendants() if "HOROVOD_RANK" in _environ(p)]
    assert len(ranks) == 2

    code, seconds, left = _stop(command, signum)

    assert code == exit_code
    assert seconds < 30, f"took {seconds:.1f} s to stop"
    assert not left, f"left running: {[p.pid for p in left]}"
    assert not alive(ranks)
    result = _summary(summary)
    assert (result["status"], result["failed_stage"]) == ("killed", "train")
    catalog = Catalog.for_workdir(workdir)
    run_id = atomic.read_json(catalog.latest_run("image_cnn"))["run_id"]
    config_uri = f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
    assert MlflowClient(config_uri).get_run(run_id).info.status == "KILLED"
    assert catalog.checkpoint(run_id).is_file()  # the last complete epoch is kept for train.resume


def _environ(process) -> dict:
    try:
        return process.environ()
    except Exception:
        return {}
