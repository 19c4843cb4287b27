"""One run per workdir at a time: a lock file that names its holder, released by the kernel when the
holder exits however it exits, so a lock left by a killed run is never stale."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.core.catalog import Catalog
from pipelines.core.errors import DlfusionError


class WorkdirBusy(DlfusionError):
    """Another run holds the workdir; the message names it (process, host, stage, start time)."""


@contextmanager
def workdir_lock(workdir: Path, stage: str) -> Iterator[Path]:
    """Hold the workdir's lock while the block runs.

    The lock is an ``flock`` on ``WORKDIR/.dlfusion.lock``, which holds the holder's pid, host, stage
    and start time for the message a second run prints. ``flock`` works between processes of one
    host and on most shared file systems (NFS v4 maps it to its own locks).

    Raises:
        WorkdirBusy: when another process holds it.
        ConfigError: when the workdir is a URI (``s3://``): ``flock`` needs a local or mounted file.
    """
    from pipelines.core.locations import require_local

    path = Catalog.for_workdir(require_local(workdir, "the workdir lock (flock)")).lock
    handle = open(path, "a+", encoding="utf-8")  # never truncate: the holder's record is in it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _describe(handle.read())
        handle.close()
        raise WorkdirBusy(f"{path.parent}: in use by {holder}; wait for it, or use another workdir") from None
    try:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "stage": stage,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record))
        handle.flush()
        yield path
    finally:
        handle.close()  # releases the lock; the record stays, for the curious


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return (
            f"dlfusion {holder['stage']} (process {holder['pid']} on {holder['host']}, "
            f"started {holder['started']})"
        )
    except (ValueError, KeyError, TypeError):
        return "another dlfusion run"
