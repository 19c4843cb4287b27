"""Tracking against a real `mlflow server` over HTTP, and training that survives a tracking outage."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines import tracking, training
from tests.conftest import image_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_training_logs_to_an_mlflow_server_over_http(mlflow_server, trainable_workdir, spark):
    config = image_config(trainable_workdir, "train.epochs=1", f"mlflow.tracking_uri={mlflow_server}")
    result = training.run(config)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.data.params["data.ingest.files_seen"] == "1797"
    assert [m.step for m in client.get_metric_history(result.run_id, "val_accuracy")] == [1]
    assert not (trainable_workdir / "mlflow.db").exists()  # nothing went to the embedded store

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(result.model_uri)  # artifacts come back through the server
    assert np.asarray(model.predict(np.zeros((2, 32, 32, 3), np.uint8))).shape == (2, 10)


def test_metric_logging_to_a_dead_server_warns_instead_of_raising(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{_free_port()}"
    started = time.time()
    assert tracking.log_metrics(dead, "0" * 32, {"loss": 1.0}, step=1) is False
    assert time.time() - started < 30
    assert "MLflow logging failed, training continues" in caplog.text
