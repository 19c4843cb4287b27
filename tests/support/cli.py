"""Running ``dlfusion`` as a user does: the installed command, in a clean environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The console script the install put beside this interpreter (.venv/bin/dlfusion).
DLFUSION = str(Path(sys.executable).with_name("dlfusion"))


def clean_env(**settings: str) -> dict[str, str]:
    """What a user's shell holds: PATH (the venv's bin first, as after ``activate``) and HOME, plus
    the variables the user would set (``settings``). Nothing of the test process's own environment:
    a test that sees what the user sees must not inherit what pytest or an import set here.
    Under ``make coverage``, coverage.py's own variables pass through explicitly, so that the
    command is measured too."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ["HOME"]}
    env.update({key: value for key, value in os.environ.items() if key.startswith("COVERAGE_")})
    return {**env, **settings}


def dlfusion(*args: str, timeout: float = 900, **settings: str) -> subprocess.CompletedProcess:
    """``dlfusion ARGS`` as a user types it: the installed command, from the repository root, in a
    clean environment (``clean_env(**settings)``); the finished process, its output captured."""
    return subprocess.run(
        [DLFUSION, *args],
        cwd=ROOT,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
