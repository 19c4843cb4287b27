"""Running ``dlfusion`` as users and schedulers do (a separate process), watching its output and the
processes it started, and stopping it with real signals."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import psutil

from tests.support.cli import DLFUSION, ROOT, clean_env


class Dlfusion:
    """A running ``dlfusion`` command; its console lines are collected as they come."""

    def __init__(self, *args: str, max_file_bytes: int | None = None, env: dict[str, str] | None = None):
        """Started in a clean environment (``clean_env``) plus ``env``. ``max_file_bytes``: no file it
        (or anything it starts) writes may grow past this, as on a full disk (RLIMIT_FSIZE; Python
        ignores SIGXFSZ, so the write fails with EFBIG)."""

        def limit() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

        self.process = subprocess.Popen(
            [DLFUSION, *args],
            cwd=ROOT,
            env=clean_env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limit if max_file_bytes else None,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        """Block until a console line matches ``pattern``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"dlfusion ended before {pattern!r}:\n" + "\n".join(self.lines[-30:]))
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matched {pattern!r} in {timeout} s:\n" + "\n".join(self.lines[-30:]))

    def wait_until_staged(self, folder: Path, timeout: float = 120) -> None:
        """Block until a Spark task has written a file into a staging folder (``.tmp-*``) under
        ``folder``: the stage is writing its new output and has not committed it. A condition on
        disk, not a timer-driven progress line that a fast run may never print."""
        deadline = time.monotonic() + timeout
        while not list(folder.glob("**/.tmp-*/*/part-*.parquet")):
            assert self.process.poll() is None, "dlfusion ended before it staged a file:\n" + "\n".join(
                self.lines[-30:]
            )
            assert time.monotonic() < deadline, f"no staged file under {folder} in {timeout} s"
            time.sleep(0.02)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def finish(self, timeout: float = 120) -> int:
        """Wait for the command to end; collect the rest of its output; return its exit code."""
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith("dlfusion: error:")]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies count as gone)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running
