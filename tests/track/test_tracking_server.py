"""Tracking against a real `mlflow server` over HTTP, and training that survives a tracking outage."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.track import mlflow_server as mlflow_server_module
from pipelines.track import runs
from tests.conftest import ROOT
from tests.support.cli import DLFUSION, clean_env, dlfusion, free_port
from tests.support.serving import served_predictions

QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


SECRET = "s3cret-token-7f2a"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (the one ``make mlflow`` starts) on a free loopback port."""
    port = free_port()
    server = mlflow_server_module.start(tmp_path_factory.mktemp("mlflow-server"), port=port, **QUIET)
    yield f"http://127.0.0.1:{port}"
    mlflow_server_module.stop(server)


def test_metric_logging_to_a_dead_server_warns_instead_of_raising(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.time()
    assert runs.log_metrics(dead, "0" * 32, {"loss": 1.0}, step=1) is False
    assert time.time() - started < 30
    assert "MLflow logging failed, training continues" in caplog.text


@pytest.fixture(scope="module")
def http_run(mlflow_server, tmp_path_factory) -> dict:
    """`dlfusion run` of the digits against the server, with the promotion gate; its summary JSON."""
    tmp_path = tmp_path_factory.mktemp("http-run")
    summary = tmp_path / "summary.json"
    # The URI holds credentials, as a proxied server's may: they must never be written anywhere.
    with_secret = mlflow_server.replace("http://", f"http://alice:{SECRET}@")
    result = dlfusion(
        "run",
        "conf/image_cnn.yaml",
        f"workdir={tmp_path / 'work'}",
        "spark.master=local[2]",
        "train.epochs=2",
        f"mlflow.tracking_uri={with_secret}",
        "mlflow.registered_model=digits-http",
        "promote.enabled=true",
        "--summary-json",
        str(summary),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(summary.read_text()), "_console": result.stdout + result.stderr}


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_written_nowhere(mlflow_server, http_run):
    client = MlflowClient(mlflow_server)
    run = client.get_run(http_run["run_id"])
    assert run.data.params["mlflow.tracking_uri"] == mlflow_server.replace("http://", "http://alice:***@")
    written = {
        "console": http_run["_console"],
        "summary": json.dumps({k: v for k, v in http_run.items() if k != "_console"}),
        "params": json.dumps(run.data.params),
        "tags": json.dumps(run.data.tags),
        **{str(path): path.read_text() for path in Path(http_run["workdir"], "logs").glob("*.log")},
    }
    assert len(written) > 4  # the log files are there
    leaks = [line for text in written.values() for line in text.splitlines() if SECRET in line]
    assert [name for name, text in written.items() if SECRET in text] == [], leaks[:3]


@pytest.mark.slow
def test_a_whole_run_over_http_is_findable_in_the_server(mlflow_server, http_run):
    """Name, params, tags, per-epoch curves, plots, the registered version and its alias."""
    report = http_run
    client = MlflowClient(mlflow_server)
    run = client.get_run(report["run_id"])
    assert run.info.run_name.startswith("image_cnn-demo-") and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.ingest.files_seen"] == "1797"
    assert run.data.tags["dlfusion.pipeline"] == "image_cnn" and run.data.tags["dlfusion.horovod_size"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(report["test_metrics"]["test_accuracy"])
    artifacts = {
        a.path for folder in ("plots", "evaluation") for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert {
        "plots/learning_curves.png",
        "evaluation/confusion_matrix.png",
        "evaluation/per_class.csv",
    } <= artifacts
    champion = client.get_model_version_by_alias("digits-http", "champion")
    assert champion.run_id == run.info.run_id and report["promotion"]["decision"] == "promoted"
    assert "candidate" in champion.aliases
    assert (
        client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"]
        == "custom_model_development"
    )
    assert not (Path(report["workdir"]) / "mlflow.db").exists()  # nothing went to the embedded store

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(report["model_uri"])  # artifacts come back through the server
    assert np.asarray(model.predict(np.zeros((2, 32, 32, 3), np.uint8))).shape == (2, 10)


def test_a_server_that_is_down_fails_the_run_in_seconds_before_any_work(tmp_path):
    dead = f"http://user:hunter2@127.0.0.1:{free_port()}"
    started = time.time()
    summary = tmp_path / "summary.json"
    result = dlfusion(
        "run",
        "conf/image_cnn.yaml",
        f"workdir={tmp_path / 'work'}",
        f"mlflow.tracking_uri={dead}",
        "--summary-json",
        str(summary),
        timeout=120,
    )
    assert result.returncode == 1 and time.time() - started < 30
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("dlfusion: error: MLflow tracking server http://user:***@127.0.0.1:")
        and "hunter2" not in line
    )
    assert not (tmp_path / "work" / "ingest").exists()  # no Spark work was done
    report = json.loads(summary.read_text())
    assert report["status"] == "failed" and "hunter2" not in summary.read_text()


@pytest.mark.slow
def test_training_outlives_a_server_outage_and_logs_everything_once_it_is_back(trainable_workdir, tmp_path):
    """The server stops after epoch 1: training finishes, says how to log later; after a restart that
    command sends the kept metrics and the model."""
    port, root = free_port(), tmp_path / "server"
    url = f"http://127.0.0.1:{port}"
    server = mlflow_server_module.start(root, port=port, **QUIET)
    args = ["train", "conf/image_cnn.yaml", f"workdir={trainable_workdir}", "spark.master=local[2]"]
    args += ["train.epochs=4", f"mlflow.tracking_uri={url}"]
    training_process = subprocess.Popen(
        [DLFUSION, *args],
        cwd=ROOT,
        # What a user sets to give up on a dead server at once instead of after MLflow's retries.
        env=clean_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = MlflowClient(url)
        deadline = time.time() + 300
        while time.time() < deadline:  # wait for the first epoch's metrics, then pull the plug
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and "loss" in runs[0].data.metrics:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no epoch was logged")
        run_id = runs[0].info.run_id
        mlflow_server_module.stop(server)
        _, stderr = training_process.communicate(timeout=600)
    finally:
        training_process.kill()
        mlflow_server_module.stop(server)
    assert training_process.returncode == 1
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("dlfusion: error: training finished, but MLflow at " + url)
    assert line.endswith("log them with dlfusion train CONFIG train.resume=true")
    checkpoints = trainable_workdir / "checkpoints" / run_id
    kept = sorted(p.name for p in checkpoints.iterdir())
    assert "model.keras" in kept and "unsent_metrics.json" in kept, (kept, stderr[-2000:])

    server = mlflow_server_module.start(root, port=port, **QUIET)  # the same store, back again
    try:
        again = dlfusion(*args, "train.resume=true")
        assert again.returncode == 0, again.stderr[-3000:]
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]
        assert not (checkpoints / "unsent_metrics.json").exists()
        assert client.get_run(run_id).info.status == "FINISHED"
        mlflow.set_tracking_uri(url)
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        assert np.asarray(model.predict(np.zeros((1, 32, 32, 3), np.uint8))).shape == (1, 10)
    finally:
        mlflow_server_module.stop(server)


@pytest.mark.slow
def test_the_mlflow_ui_shows_the_run_in_a_real_browser(mlflow_server, http_run, tmp_path):
    """Headless Chromium (Debian's, installed by `make test`) renders the run's page of the server."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: make test installs it (apt-get install chromium)"
    run = MlflowClient(mlflow_server).get_run(http_run["run_id"])
    # The run's page as the console gives it (the URI printed there is redacted: open the plain one).
    page = f"{mlflow_server}/{http_run['mlflow_ui_page']}"
    assert "the run in MLflow's UI: http://alice:***@127.0.0.1:" in http_run["_console"]
    assert http_run["mlflow_ui_page"] in http_run["_console"]
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=20000",
    ]
    output = ROOT / "work" / "test-output"
    output.mkdir(parents=True, exist_ok=True)
    shot = subprocess.run(
        [
            chromium,
            *flags,
            f"--user-data-dir={tmp_path / 'a'}",
            "--window-size=1400,1000",
            f"--screenshot={output / 'mlflow_run_page.png'}",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.returncode == 0 and (output / "mlflow_run_page.png").stat().st_size > 10_000, shot.stderr[
        -2000:
    ]

    def rendered(url: str, profile: str) -> str:
        """The page's DOM once Chromium has rendered it, in a fresh browser profile."""
        dump = [chromium, *flags, f"--user-data-dir={tmp_path / profile}", "--dump-dom", url]
        return subprocess.run(dump, capture_output=True, text=True, timeout=180).stdout

    dom = rendered(page, "b")
    assert run.info.run_name in dom
    assert "val_accuracy" in dom

    # The experiment in the same view opens on its runs table, not on MLflow's GenAI traces overview.
    experiment = page.split("/runs/")[0] + "?workflowType=machine_learning"
    dom = rendered(experiment, "c")
    assert "Run Name" in dom and run.info.run_name in dom and "Token Usage" not in dom, dom[-2000:]


@pytest.mark.slow
def test_the_champion_served_by_mlflow_models_serve_answers_like_the_pyfunc(mlflow_server, http_run):
    """The registry's champion served as the docs say; one digit image posted as MLflow's JSON."""
    champion = "models:/digits-http@champion"
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    served = served_predictions(champion, mlflow_server, {"inputs": image.tolist()})
    mlflow.set_tracking_uri(mlflow_server)
    expected = np.asarray(mlflow.pyfunc.load_model(champion).predict(image))
    assert served.shape == (1, 10) and np.allclose(served, expected, atol=1e-6)
