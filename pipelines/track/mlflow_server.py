"""A real ``mlflow server`` on one machine: SQLite backend, local artifacts, loopback by default."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path


def backend_store_uri(root: Path) -> str:
    """The server's SQLite database under ``root``."""
    return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def server_command(root: Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line that keeps everything under ``root``."""
    root = Path(root).resolve()
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri(root),
        "--artifacts-destination",
        str(root / "artifacts"),
    ]


def is_up(url: str, timeout_s: float = 2.0, path: str = "/health") -> bool:
    """Whether the server at ``url`` answers its health check (``mlflow models serve``: ``/ping``)."""
    parts = urllib.parse.urlsplit(url.rstrip("/"))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)) + path)
    if parts.username is not None:  # credentials in the URI (urllib does not take them from it)
        user = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def start(
    root: Path, host: str = "127.0.0.1", port: int = 5000, wait_s: float = 120, **popen
) -> subprocess.Popen:
    """Start the server and return once it answers (or raise RuntimeError, with the server stopped)."""
    from pipelines.track import database

    Path(root).mkdir(parents=True, exist_ok=True)
    database.prepare(backend_store_uri(root))  # a copy: not migrated by the server
    # MLflow 3's job runner (GenAI scorers, trace roll-ups: nothing a training run uses) is 8 more
    # processes: measured here, a server started in 10-12 s and 10 core-seconds without it, against
    # 15 s and 33 core-seconds with it. A user who wants it sets the variable to true.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, **popen.pop("env", {})}
    # Its own session: ``mlflow server`` runs its web workers as children, which ``stop`` must reach.
    server = subprocess.Popen(server_command(root, host, port), start_new_session=True, env=env, **popen)
    wait_until_up(server, f"http://{host}:{port}", wait_s)
    return server


def wait_until_up(
    server: subprocess.Popen,
    url: str,
    wait_s: float = 120,
    path: str = "/health",
    name: str = "mlflow server",
) -> None:
    """Return once the server process ``name`` at ``url`` answers ``path``; if it exits or ``wait_s``
    passes first, stop it and raise RuntimeError."""
    deadline = time.time() + wait_s
    while not is_up(url, path=path):
        if server.poll() is not None or time.time() > deadline:
            stop(server)
            raise RuntimeError(f"{name} at {url} did not start (exit code {server.poll()})")
        time.sleep(0.5)


def stop(server: subprocess.Popen, timeout_s: float = 5) -> None:
    """Stop the server and its worker processes (killed if they are not gone after ``timeout_s``:
    the web server's graceful shutdown otherwise waits up to 30 s for idle connections)."""
    import os
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
