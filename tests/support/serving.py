"""``mlflow models serve`` as a user starts it: MLflow's own server process, from a clean environment."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import numpy as np

from pipelines.track import mlflow_server
from tests.support.cli import clean_env, free_port


def served_predictions(model_uri: str, tracking_uri: str, payload: dict, wait_s: float = 120) -> np.ndarray:
    """Start ``mlflow models serve -m MODEL_URI --env-manager local`` (``mlflow`` found on the venv's
    PATH, as after ``activate``), post ``payload`` (MLflow's JSON) to ``/invocations``, stop the
    server; return its ``predictions``."""
    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        env=clean_env(MLFLOW_TRACKING_URI=tracking_uri),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        mlflow_server.wait_until_up(server, url, wait_s, path="/ping", name="mlflow models serve")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return np.asarray(json.loads(response.read())["predictions"])
    finally:
        mlflow_server.stop(server)
