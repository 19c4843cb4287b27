"""The dlfusion DAG under a real Airflow (2.10, SQLite): run by jobs/airflow/test.sh (make airflow-test),
which sets AIRFLOW_HOME to a fresh folder with a migrated database. The DAG's tasks call the project's
.venv/bin/dlfusion, for real: `airflow dags test` runs the stages on the digits demo."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from airflow.models import DagBag, DagRun, TaskInstance, XCom
from airflow.utils import timezone
from airflow.utils.session import create_session
from airflow.utils.types import DagRunType

ROOT = Path(__file__).resolve().parents[3]
DAG_FILE = ROOT / "jobs" / "airflow" / "dlfusion_dag.py"
DLFUSION = ROOT / ".venv" / "bin" / "dlfusion"
AIRFLOW = Path(sys.executable).with_name("airflow")
STAGES = ["ingest", "preprocess", "train", "evaluate", "promote"]


def load_dag(folder: Path = DAG_FILE):
    bag = DagBag(dag_folder=str(folder), include_examples=False)
    assert bag.import_errors == {}
    return bag.get_dag("dlfusion")


def run_id_of(date: str) -> str:
    return DagRun.generate_run_id(DagRunType.MANUAL, timezone.parse(date))


def dags_test(date: str, conf: dict, log: Path, env: dict | None = None, timeout: int = 1800):
    """`airflow dags test dlfusion DATE -c CONF` in a subprocess; its output goes to ``log``."""
    command = [str(AIRFLOW), "dags", "test", "-S", str(DAG_FILE), "dlfusion", date, "-c", json.dumps(conf)]
    with open(log, "w") as out:
        result = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, timeout=timeout
        )
    return result.returncode, log.read_text()


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def logged(out: str, text: str) -> list[datetime]:
    """When the log records holding ``text`` were made. `dags test` prints each record twice (two
    handlers: "[2025-01-02 10:00:00,123]" and "[2025-01-02T10:00:00.123+0000]"), once each here."""
    times = set()
    for line in out.splitlines():
        stamp = re.match(r"\[(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)[,.](\d{3})", line)
        if stamp and text in line:
            times.add(datetime.fromisoformat("{} {}.{}".format(*stamp.groups())))
    return sorted(times)


def task_instances(date: str) -> dict[str, TaskInstance]:
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id="dlfusion", run_id=run_id_of(date)).all()
        session.expunge_all()
    return {ti.task_id: ti for ti in tis}


def xcom(date: str, task_id: str):
    return XCom.get_one(dag_id="dlfusion", run_id=run_id_of(date), task_id=task_id, key="return_value")


def registered_versions(workdir: Path, model: str) -> list[str]:
    """The model's versions in the workdir's MLflow registry, read with the project's venv."""
    read = (
        "import sys; from mlflow import MlflowClient; "
        "versions = MlflowClient(sys.argv[1]).search_model_versions(f\"name='{sys.argv[2]}'\"); "
        "print(' '.join(sorted(str(v.version) for v in versions)))"
    )
    python = ROOT / ".venv" / "bin" / "python"
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    result = subprocess.run(
        [str(python), "-c", read, uri, model], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_dag_imports_through_dagbag_without_errors():
    bag = DagBag(dag_folder=str(DAG_FILE), include_examples=False)
    assert bag.import_errors == {}
    assert bag.dag_ids == ["dlfusion"]
    dag = bag.get_dag("dlfusion")
    assert dag.schedule_interval is None and dag.catchup is False and dag.max_active_runs == 1
    assert dag.params["config"] == str(ROOT / "conf" / "image_cnn.yaml")
    assert dag.params["workdir"] == str(ROOT / "work" / "airflow")


def test_tasks_are_the_stage_chain_with_backoff_retries():
    dag = load_dag()
    assert [task.task_id for task in dag.topological_sort()] == STAGES
    assert dag.get_task("ingest").upstream_task_ids == set()
    for before, after in zip(STAGES, STAGES[1:], strict=False):
        assert dag.get_task(before).downstream_task_ids == {after}
        assert dag.get_task(after).upstream_task_ids == {before}
    assert dag.get_task("promote").downstream_task_ids == set()
    for task in dag.tasks:
        assert type(task).__name__ == "DlfusionStage" and task.stage == task.task_id
        assert task.retries == 3 and task.retry_exponential_backoff
        assert task.retry_delay == timedelta(minutes=5) and task.max_retry_delay == timedelta(hours=1)
        assert list(task.skip_on_exit_code) == [2]  # turned into a failure without retries


def test_command_quotes_every_argument_and_takes_a_stage_placeholder():
    command = load_dag().user_defined_macros["dlfusion_command"]
    params = {
        "config": "/opt/dl fusion/conf/image_cnn.yaml",
        "workdir": "/data/work dir",
        "data_source": "/data/my flowers",
        "registered_model": "flowers",
        "init_from": "champion",
        "overrides": ["train.epochs=2", "ingest.image_size=64"],
        "dlfusion": "spark-submit --master local[2] /opt/dlfusion/jobs/{stage}.py",
    }
    words = shlex.split(command(params, "train", "manual__2025-01-02T00:00:00+00:00"))
    assert words == [
        "exec",
        *["spark-submit", "--master", "local[2]", "/opt/dlfusion/jobs/train.py"],
        "/opt/dl fusion/conf/image_cnn.yaml",
        "workdir=/data/work dir",
        "data.source=/data/my flowers",
        "mlflow.registered_model=flowers",
        "train.init_from=champion",
        "train.epochs=2",
        "ingest.image_size=64",
        "--summary-json",
        "/data/work dir/summaries/manual__2025-01-02T00_00_00_00_00/train.json",
    ]
    plain = shlex.split(
        command({**params, "dlfusion": "/venv/bin/dlfusion", "data_source": ""}, "ingest", "r")
    )
    assert plain[:4] == ["exec", "/venv/bin/dlfusion", "ingest", "/opt/dl fusion/conf/image_cnn.yaml"]
    assert not any(word.startswith("data.source=") for word in plain)
    on_s3 = shlex.split(command({**params, "workdir": "s3://bucket/work"}, "ingest", "r"))
    assert on_s3[-1] == f"{tempfile.gettempdir()}/dlfusion/summaries/r/ingest.json"  # dlfusion refuses it
    as_file_uri = shlex.split(command({**params, "workdir": "file:///data/work"}, "ingest", "r"))
    assert as_file_uri[-1] == "/data/work/summaries/r/ingest.json"


def test_symlinked_into_a_dags_folder_it_finds_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("DLFUSION_HOME", raising=False)
    (tmp_path / "dlfusion_dag.py").symlink_to(DAG_FILE)
    dag = load_dag(tmp_path)
    assert dag.params["config"] == str(ROOT / "conf" / "image_cnn.yaml")
    assert {task.cwd for task in dag.tasks} == {str(ROOT)}


def test_copied_into_a_dags_folder_it_takes_dlfusion_home_and_bin(tmp_path, monkeypatch):
    (tmp_path / "dlfusion_dag.py").write_text(DAG_FILE.read_text())
    monkeypatch.setenv("DLFUSION_HOME", str(ROOT))
    monkeypatch.setenv("DLFUSION_BIN", "/opt/venv/bin/dlfusion")
    dag = load_dag(tmp_path)
    assert dag.params["config"] == str(ROOT / "conf" / "image_cnn.yaml")
    assert dag.params["dlfusion"] == "/opt/venv/bin/dlfusion"


def test_dags_test_runs_every_stage_on_the_demo_and_pushes_the_summaries(tmp_path):
    """The DAG end to end (one epoch); each task's XCom is its stage's summary JSON; then promote,
    run again on the same workdir, succeeds and registers no second version (idempotent re-run)."""
    date, workdir = "2025-01-02", tmp_path / "work"
    conf = {"workdir": str(workdir), "dlfusion": str(DLFUSION), "overrides": ["train.epochs=1"]}
    code, out = dags_test(date, conf, tmp_path / "dags-test.log")
    assert code == 0, tail(out)
    tis = task_instances(date)
    assert {name: (ti.state, ti.try_number) for name, ti in tis.items()} == {
        name: ("success", 1) for name in STAGES
    }
    summaries = {name: xcom(date, name) for name in STAGES}
    for name, summary in summaries.items():
        assert summary["stage"] == name and summary["status"] == "succeeded"
        assert summary["workdir"] == str(workdir)
        written = workdir / "summaries" / run_id_of(date).replace(":", "_").replace("+", "_") / f"{name}.json"
        assert json.loads(written.read_text()) == summary
    ingest = summaries["ingest"]["ingest"]
    assert ingest["files_seen"] == ingest["rows_written"] + ingest["rows_quarantined"] == 1797
    accuracy = summaries["evaluate"]["test_metrics"]["test_accuracy"]
    assert summaries["evaluate"]["primary_metric"] == {"test_accuracy": accuracy}
    assert 0.5 < accuracy <= 1.0  # one epoch on the digits: 0.86 here; chance is 0.1
    promotion = summaries["promote"]["promotion"]
    assert promotion["model"] == "image_cnn" and promotion["version"] == "1"
    assert promotion["decision"] == "promoted" and promotion["reason"] == "no champion yet"
    assert promotion["score"] == accuracy

    # The same task again, as a cleared task would run: same workdir, same result, no new version.
    again = subprocess.run(
        [str(AIRFLOW), "tasks", "test", "-S", str(DAG_FILE), "dlfusion", "promote", date],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, tail(again.stdout + again.stderr)
    rerun = json.loads(written.with_name("promote.json").read_text())
    assert rerun["status"] == "succeeded", rerun
    if "promote" not in rerun["skipped"]:  # not skipped as unchanged: the gate ran again, kept v1
        assert rerun["promotion"]["version"] == "1" and rerun["promotion"]["decision"] == "kept"
    assert registered_versions(workdir, "image_cnn") == ["1"]


def test_a_config_error_fails_the_task_at_once_without_retries(tmp_path):
    date = "2025-01-03"
    env = {"DLFUSION_BIN": str(DLFUSION), "DLFUSION_RETRIES": "2", "DLFUSION_RETRY_DELAY_S": "1"}
    conf = {"workdir": str(tmp_path / "work"), "overrides": ["train.epochz=1"]}
    code, out = dags_test(date, conf, tmp_path / "dags-test.log", env=env)
    assert code != 0 and "DagRun failed" in out, tail(out)
    tis = task_instances(date)
    assert tis["ingest"].max_tries == 2  # it had retries to spare
    assert (tis["ingest"].state, tis["ingest"].try_number) == ("failed", 1), tail(out)
    assert {tis[name].state for name in STAGES[1:]} == {"upstream_failed"}
    assert "train.epochz: unknown key" in out
    assert "(exit code 2: configuration error, not retried)" in out
    assert len(logged(out, "Command exited with return code 2")) == 1


def test_a_busy_workdir_exit_75_is_retried_with_exponential_backoff(tmp_path):
    """The control for the test above: the same DAG retries exit code 75 (another run holds the
    workdir's lock, held here by the test), with delays of 3 s, then 6-12 s (exponential)."""
    date, workdir = "2025-01-04", tmp_path / "work"
    workdir.mkdir()
    env = {"DLFUSION_BIN": str(DLFUSION), "DLFUSION_RETRIES": "2", "DLFUSION_RETRY_DELAY_S": "3"}
    with open(workdir / ".dlfusion.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(json.dumps({"pid": os.getpid(), "host": "test", "stage": "train", "started": "now"}))
        lock.flush()
        code, out = dags_test(date, {"workdir": str(workdir)}, tmp_path / "dags-test.log", env=env)
    assert code != 0 and "DagRun failed" in out, tail(out)
    ingest = task_instances(date)["ingest"]
    assert (ingest.state, ingest.try_number) == ("failed", 3), tail(out)
    assert "(exit code 75: workdir busy, retried later)" in out
    assert "in use by dlfusion train (process" in out
    starts = logged(out, "', '-c', 'exec ")
    ends = logged(out, "Command exited with return code 75")
    assert len(starts) == len(ends) == 3, tail(out)
    waits = [(starts[i + 1] - ends[i]).total_seconds() for i in range(2)]
    assert 3 <= waits[0] and 6 <= waits[1], waits  # a constant 3 s delay would wait 3-4 s twice
