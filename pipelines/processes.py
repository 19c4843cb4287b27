"""Stopping what this process started (the Spark JVM, the Horovod launcher, the ranks), so that a
signal or a failure never leaves a process behind."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from pipelines.errors import Interrupted

log = logging.getLogger(__name__)


def stop_tree(pid: int, grace_s: float = 5.0, include_root: bool = True) -> int:
    """SIGTERM ``pid`` and all its descendants, SIGKILL whatever is left after ``grace_s``.

    Descendants are listed before any is signalled: a rank re-parented to init when its launcher
    dies is still found. Returns the number of processes signalled.
    """
    try:
        root = psutil.Process(pid)
        processes = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    if alive:
        names = ", ".join(sorted({_name(process) for process in alive}))
        logging.getLogger("dlfusion.trace").debug("killed after %.0f s of SIGTERM: %s", grace_s, names)
    return len(processes)


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()[:3])[:120]
    except psutil.Error:
        return str(process.pid)


def stop_children(grace_s: float = 5.0) -> int:
    """Stop every process this one started, and theirs."""
    return stop_tree(os.getpid(), grace_s, include_root=False)


@dataclass
class Stopping:
    """Which signal, if any, asked the block to stop."""

    signal_name: str | None = None
    exit_code: int = 0


@contextmanager
def interruptible() -> Iterator[Stopping]:
    """While the block runs, SIGTERM and SIGINT raise ``Interrupted`` in the main thread, whatever it
    waits on (a Spark job, the Horovod launcher). A second signal while stopping is only noted."""
    stopping = Stopping()

    def handler(signum, frame):
        if stopping.signal_name:
            log.warning("%s received: already stopping", signal.Signals(signum).name)
            return
        stopping.signal_name, stopping.exit_code = signal.Signals(signum).name, 128 + signum
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopping
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
