"""Running ``dlfusion`` as a user does: the installed command, in a clean environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The console script the install put beside this interpreter (.venv/bin/dlfusion).
DLFUSION = str(Path(sys.executable).with_name("dlfusion"))


def clean_env(**settings: str) -> dict[str, str]:
    """What a user's shell holds: PATH (the venv's bin first, as after ``activate``) and HOME, plus
    the variables the user would set (``settings``). Nothing of the test process's own environment:
    a test that sees what the user sees must not inherit what pytest or an import set here.
    Coverage of subprocesses passes through explicitly (``COVERAGE_PROCESS_START``)."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ["HOME"]}
    if "COVERAGE_PROCESS_START" in os.environ:
        env["COVERAGE_PROCESS_START"] = os.environ["COVERAGE_PROCESS_START"]
    return {**env, **settings}
