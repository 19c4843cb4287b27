"""Horovod rank faults with real ranks: a rank killed by a signal, more ranks than Spark task slots."""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
from mlflow import MlflowClient

from pipelines.core.catalog import Catalog
from pipelines.core.errors import TrainingError
from pipelines.io import atomic, parquet
from pipelines.preprocess import stage as preprocess_stage
from pipelines.train import driver
from tests.conftest import image_config
from tests.reliability.conftest import Dlfusion, alive


def _rank(command: Dlfusion, rank: int):
    for process in command.descendants():
        try:
            if process.environ().get("HOROVOD_RANK") == str(rank) and "python" in process.name():
                return process
        except Exception:
            continue
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.slow
def test_a_rank_killed_by_sigkill_fails_the_run_naming_it_and_resume_finishes(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    args = ("train", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]", "train.epochs=4")
    summary = tmp_path / "summary.json"
    command = Dlfusion(*args, "--summary-json", str(summary))
    command.wait_for(r"epoch 2/4", timeout=240)

    killed_at = time.monotonic()
    _rank(command, 1).send_signal(signal.SIGKILL)
    code = command.finish(timeout=120)

    assert code == 1 and time.monotonic() - killed_at < 60
    assert command.error_lines == [
        "dlfusion: error: rank 1 failed: the process was killed by SIGKILL (exit code 137)"
    ] or command.error_lines == [
        "dlfusion: error: rank 1 failed: the process was killed by SIGKILL (exit code -9)"
    ]
    result = json.loads(summary.read_text())
    assert (result["status"], result["failed_stage"]) == ("failed", "train")
    catalog = Catalog.for_workdir(workdir)
    run_id = atomic.read_json(catalog.latest_run("image_cnn"))["run_id"]
    client = MlflowClient(f"sqlite:///{workdir.resolve() / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "FAILED"
    assert catalog.checkpoint(run_id).is_file()

    resumed = Dlfusion(*args, "train.resume=true")
    assert resumed.finish(timeout=300) == 0, "\n".join(resumed.lines[-20:])
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_accuracy")]
    assert sorted(set(steps)) == [1, 2, 3, 4]  # no epoch missing, none trained twice past the kill


@pytest.mark.slow
def test_more_ranks_than_spark_task_slots_fails_within_the_start_timeout(digits_workdir, tmp_path, spark):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    config = image_config(  # the session's master is local[2]: two task slots for three ranks
        workdir, "train.launcher=spark", "train.num_proc=3", "train.start_timeout_s=5", "train.epochs=1"
    )
    started = time.monotonic()
    with pytest.raises(TrainingError) as caught:
        driver.run(config)
    assert time.monotonic() - started < 90
    assert "not all 3 ranks' Spark tasks started and registered within train.start_timeout_s=5 s" in str(
        caught.value
    )
    deadline = time.monotonic() + 30  # the tasks that did start are cancelled, not left waiting
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(1)
    assert not spark.sparkContext.statusTracker().getActiveJobsIds()


@pytest.mark.slow
def test_uneven_shards_give_every_rank_the_same_steps(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    config = image_config(workdir, "preprocess.rows_per_row_group=400", "train.num_proc=3", "train.epochs=2")
    preprocess_stage.run(config)
    sizes = parquet.row_group_sizes(Catalog.for_workdir(workdir).split("train"))
    assert len(sizes) == 4 and len(set(sizes)) > 1  # ranks get 2, 1 and 1 row groups of unequal size

    result = driver.run(config)

    assert len(result.rank_digests) == 3 and len(set(result.rank_digests)) == 1
    assert len(result.history["loss"]) == 2


@pytest.mark.slow
def test_the_trainers_memory_does_not_grow_over_epochs(trainable_workdir, ranks):
    config = image_config(trainable_workdir, "train.epochs=5")

    memory = driver.run(config, ranks).history["memory_rss_mb"]  # long-lived ranks, as in dlfusion run

    assert len(memory) == 5
    assert memory[4] <= memory[0] * 1.10, f"rank 0 resident memory by epoch (MB): {memory}"


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_fails_clearly_and_keeps_the_previous_one(
    trainable_workdir, ranks
):
    import numpy as np

    workdir = trainable_workdir
    driver.run(image_config(workdir, "train.epochs=1"), ranks)  # the run to resume, on the shared ranks
    args = ("train", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]")
    catalog = Catalog.for_workdir(workdir)
    run_id = atomic.read_json(catalog.latest_run("image_cnn"))["run_id"]
    checkpoint = catalog.checkpoint(run_id)
    before = checkpoint.read_bytes()

    full = Dlfusion(*args, "train.epochs=3", "train.resume=true", max_file_bytes=len(before) // 2)

    assert full.finish(timeout=300) == 1
    assert len(full.error_lines) == 1
    assert full.error_lines[0].startswith("dlfusion: error: rank 0 failed: ")
    assert (
        f"{checkpoint}: cannot write the checkpoint (File too large); the previous one is kept"
        in (full.error_lines[0])
    )
    assert checkpoint.read_bytes() == before
    assert int(np.load(checkpoint)["__epoch__"]) == 1


@pytest.mark.slow
def test_training_data_that_breaks_under_the_readers_fails_within_the_stall_timeout(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    args = ("train", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]")
    command = Dlfusion(*args, "train.epochs=20", "train.stall_timeout_s=30")
    command.wait_for(r"epoch 1/20", timeout=240)
    started = command.descendants()
    for part in Catalog.for_workdir(workdir).split("train").glob("*.parquet"):
        part.write_bytes(b"PAR1 gone")  # every reader's next pass opens these

    broke_at = time.monotonic()
    code = command.finish(timeout=180)

    assert code == 1 and time.monotonic() - broke_at < 120
    assert len(command.error_lines) == 1 and command.error_lines[0].startswith("dlfusion: error: rank ")
    time.sleep(3)
    assert not alive(started)
