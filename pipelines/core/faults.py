"""A fault injection point for the reliability tests: off unless ``DLFUSION_FAULT`` names it.

Tests that kill a process at a moment chosen by watching log lines race the work they watch; a
point named here dies on cue instead, exactly where and when the test says.
"""

from __future__ import annotations

import os
import signal

FAULT_VARIABLE = "DLFUSION_FAULT"


def die_if_armed(point: str, task: int, attempt: int) -> None:
    """SIGKILL this process (no cleanup, as the kernel's OOM killer would) when ``DLFUSION_FAULT`` is
    ``POINT:TASK`` for this ``point`` and ``task``, on the task's first attempt only, so a retry
    can succeed."""
    if attempt == 0 and os.environ.get(FAULT_VARIABLE) == f"{point}:{task}":
        os.kill(os.getpid(), signal.SIGKILL)
