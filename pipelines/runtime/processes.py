"""Stopping what this process started (the Spark JVM, the Horovod launcher, the ranks), so that a
signal or a failure never leaves a process behind."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from pipelines.core.errors import Interrupted
from pipelines.runtime.logs import TRACE_LOGGER

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
        logging.getLogger(TRACE_LOGGER).debug("killed after %.0f s of SIGTERM: %s", grace_s, names)
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
def interruptible(on_signal: Callable[[], None] | None = None) -> Iterator[Stopping]:
    """While the block runs, SIGTERM and SIGINT raise ``Interrupted`` in the main thread, whatever it
    waits on (a Spark job, the Horovod launcher), and ``on_signal`` runs in another thread (to cancel
    what the main thread waits for). A second signal while stopping is only noted.

    Python runs handlers in the main thread, but the kernel may deliver a signal to any thread, and
    then a main thread blocked in a call (a Py4J socket read) never wakes up to run it. A watcher
    thread learns of every signal through the wake-up fd and, if the main thread has not reacted,
    sends the signal to it directly.
    """
    stopping = Stopping()

    def handler(signum, frame):
        if stopping.signal_name:
            log.warning("%s received: already stopping", signal.Signals(signum).name)
            return
        interrupted = Interrupted(signum)
        stopping.signal_name, stopping.exit_code = interrupted.signal_name, interrupted.exit_code
        raise interrupted

    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    main = threading.main_thread().ident
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        while received := os.read(read_end, 1):
            time.sleep(0.5)  # time for the main thread to react, when the signal reached it
            if stopping.signal_name is None:
                signal.pthread_kill(main, received[0])
            if on_signal is not None:
                try:
                    on_signal()
                except Exception as err:  # best effort: the main thread stops the rest
                    log.debug("on_signal failed: %s", err)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="dlfusion-signals", daemon=True)
    watcher.start()
    try:
        yield stopping
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, before in previous.items():
            signal.signal(signum, before)
        os.close(write_end)  # the watcher reads the end of the pipe and returns
        watcher.join(timeout=2)
        os.close(read_end)
