"""Horovod ranks as local processes over Gloo, started directly: what ``horovod.run`` does on one
machine, without its start-up cost.

``horovod.run`` (0.28.1) took 3.3 s here before a rank's process existed: it probes the network
interfaces, starts one spawned Python "middleman" per rank, and each runs the rank through a shell.
It also exports ``HOROVOD_CYCLE_TIME=(None,)`` and ``HOROVOD_CACHE_CAPACITY=(None,)`` (its settings
hold one-element tuples), which Horovod reads as 0: a background thread that never sleeps, which
took one of the 2 cores here from TensorFlow (the demo's epochs ran 1.4x slower).

This module uses Horovod's own pieces instead (its rendezvous server and the rank environment its
Gloo launcher exports) and starts each rank with one ``subprocess.Popen`` (fork and exec: safe from
a live Spark driver, unlike a plain fork). Ranks inherit this process's standard streams.

``python -m pipelines.local_ranks FOLDER RANK [MODULE...]`` is one rank: it imports the modules,
waits for FOLDER/job.pickle, unpickles ``(function, args)`` from it, calls it, pickles the return
value to FOLDER/result-RANK.pickle and ends.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import processes


@dataclass(frozen=True)
class RankExited(Exception):
    """Ranks that ended with a non-zero exit code (-N: killed by signal N), as (rank, code) pairs:
    the first one seen, and any other seen gone at the same poll."""

    exits: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        return ", ".join(f"rank {rank} exited with code {code}" for rank, code in self.exits)


def _rank_environments(num_proc: int) -> tuple[list[dict[str, str]], Any]:
    """Horovod's rendezvous server, started, and what its Gloo launcher (``gloo_run``) exports to
    each rank on one host: (one environment per rank, the server)."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.gloo_run import create_run_env_vars, create_slot_env_vars
    from horovod.runner.http.http_server import RendezvousHTTPServer, RendezvousServer
    from horovod.runner.util.threads import in_thread

    class LoopbackRendezvous(RendezvousServer):
        """Horovod's rendezvous server on 127.0.0.1 only: its own ``start`` binds every interface."""

        def start(self, handler_cls=None) -> int:
            from horovod.runner.http.http_server import RendezvousHandler

            self._httpd = RendezvousHTTPServer(("127.0.0.1", 0), handler_cls or RendezvousHandler, 0)
            self._listen_thread = in_thread(target=self._httpd.serve_forever)
            return self._httpd.server_address[1]

    slots = get_host_assignments(parse_hosts(f"localhost:{num_proc}"), num_proc)
    server = LoopbackRendezvous(verbose=0)
    port = server.start()
    server.init(slots)
    shared = {key: str(value) for key, value in create_run_env_vars("127.0.0.1", ["lo"], port).items()}
    return [{**shared, **create_slot_env_vars(slot), "PYTHONUNBUFFERED": "1"} for slot in slots], server


class LocalRanks:
    """``num_proc`` local Horovod ranks, started ahead of their work: each imports ``preload`` (the
    rank's TensorFlow, 3-4 s) while the caller prepares the job, then runs one ``run`` call.

    Use as a context manager: leaving it stops every rank still alive and the rendezvous server.
    """

    def __init__(self, num_proc: int, env: dict[str, str], preload: tuple[str, ...] = ()):
        self._folder = Path(tempfile.mkdtemp(prefix="dlfusion-ranks-"))
        environments, self._server = _rank_environments(num_proc)
        self.started = time.time()
        self._ranks = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, str(self._folder), str(rank), *preload],
                env={**os.environ, **env, **rank_env},
                start_new_session=True,  # a terminal's Ctrl-C reaches this process only
            )
            for rank, rank_env in enumerate(environments)
        ]

    def run(self, function: Callable[..., Any], args: tuple) -> list[Any]:
        """Call ``function(*args)`` on every rank; their return values, by rank.

        When a rank exits with a non-zero code, ``RankExited`` names the first one (leaving the
        context then stops the others, as Horovod's launcher does: they would wait for it).
        """
        partial = self._folder / "job.pickle.tmp"
        partial.write_bytes(pickle.dumps((function, args)))
        partial.rename(self._folder / _JOB)
        _wait(self._ranks)
        return [pickle.loads((self._folder / _result(rank)).read_bytes()) for rank in range(len(self._ranks))]

    def __enter__(self) -> LocalRanks:
        return self

    def __exit__(self, *exc) -> None:
        for process in self._ranks:
            if process.poll() is None:
                processes.stop_tree(process.pid, grace_s=2)
        self._server.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def run(function: Callable[..., Any], args: tuple, num_proc: int, env: dict[str, str]) -> list[Any]:
    """Call ``function(*args)`` on ``num_proc`` local Horovod ranks started for it (``LocalRanks``)."""
    with LocalRanks(num_proc, env) as ranks:
        return ranks.run(function, args)


_JOB = "job.pickle"


def _result(rank: int) -> str:
    return f"result-{rank}.pickle"


def _wait(ranks: list[subprocess.Popen], poll_s: float = 0.05) -> None:
    """Wait until every rank exits; at the first non-zero exit, raise ``RankExited`` (the caller
    stops the others, as Horovod's launcher does: they would wait on the missing rank)."""
    running = dict(enumerate(ranks))
    while running:
        exits = {rank: process.poll() for rank, process in running.items()}
        failed = tuple((rank, code) for rank, code in exits.items() if code not in (None, 0))
        if failed:
            raise RankExited(failed)
        running = {rank: running[rank] for rank, code in exits.items() if code is None}
        time.sleep(poll_s)


def _main(folder: str, rank: str, *preload: str) -> None:
    """One rank: import ``preload``, wait for the job (ending if the launcher is gone), run it,
    write its result."""
    for module in preload:
        importlib.import_module(module)
    job, launcher = Path(folder) / _JOB, os.getppid()
    while not job.exists():
        if os.getppid() != launcher:  # the launcher died before handing over a job
            sys.exit(1)
        time.sleep(0.02)
    function, args = pickle.loads(job.read_bytes())
    result = function(*args)
    partial = Path(folder) / f"{_result(int(rank))}.tmp"
    partial.write_bytes(pickle.dumps(result))
    partial.rename(Path(folder) / _result(int(rank)))
    _leave()


def _leave() -> None:
    """End the rank as soon as its result is written: leave Horovod (a peer still at work sees a
    clean shutdown, not a lost connection), flush the streams, and skip the interpreter's teardown,
    which took 1.8 s with TensorFlow loaded (the demo's ranks)."""
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is not None and hvd.is_initialized():
        hvd.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    _main(*sys.argv[1:])
