"""The same jobs, unchanged, on a real Spark standalone cluster (one master, two workers, on loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.cli import free_port

pytestmark = pytest.mark.slow  # a Spark standalone cluster and spark-submit


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Spark process exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listening on port {port}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import pyspark

    home = Path(pyspark.__file__).parent
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_WORKER_DIR": str(logs / "work"),
    }
    port, ui = free_port(), free_port()
    spark_class = str(home / "bin" / "spark-class")
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(logs / "master.log", "w"),
        stderr=subprocess.STDOUT,
    )
    processes = [master]
    try:
        _wait_for_port(port, master)
        url = f"spark://127.0.0.1:{port}"
        for _ in range(2):
            worker_ui = free_port()
            processes.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "3g",
                        "--webui-port",
                        str(worker_ui),
                        url,
                    ],
                    env=env,
                    stdout=open(logs / f"worker-{len(processes)}.log", "w"),
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.time() + 90
        while (
            "Registering worker" not in (text := (logs / "master.log").read_text())
            or text.count("Registering worker") < 2
        ):
            if time.time() > deadline:
                raise RuntimeError("workers did not register:\n" + text[-2000:])
            time.sleep(0.5)
        yield url, env
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def test_whole_pipeline_runs_on_a_standalone_cluster(cluster, tmp_path):
    url, env = cluster
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("spark-submit")),
            "--master",
            url,
            "--conf",
            "spark.executor.memory=2g",
            "--conf",
            "spark.task.cpus=1",
            "jobs/run.py",
            "conf/image_cnn.yaml",
            f"workdir={tmp_path / 'work'}",
            "ingest.driver_increment_files=0",  # the executors decode (the demo's 1,797 files would not)
            "train.launcher=spark",
            "train.epochs=2",
            "--summary-json",
            str(summary),
        ],
        cwd=ROOT,
        env={**env, "PYSPARK_DRIVER_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"master {url}" in result.stdout
    report = json.loads(summary.read_text())
    assert report["status"] == "succeeded"
    assert report["ingest"]["files_seen"] == 1797
    assert report["test_metrics"]["test_accuracy"] > 0.8
