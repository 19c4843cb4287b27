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

``python -m pipelines.local_ranks JOB_FILE RESULT_FILE`` is one rank: it unpickles
``(function, args)`` from JOB_FILE, calls it and pickles the return value to RESULT_FILE.
"""

from __future__ import annotations

import os
import pickle
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
    from horovod.runner.http.http_server import RendezvousServer

    slots = get_host_assignments(parse_hosts(f"localhost:{num_proc}"), num_proc)
    server = RendezvousServer(verbose=0)
    port = server.start()
    server.init(slots)
    shared = {key: str(value) for key, value in create_run_env_vars("127.0.0.1", ["lo"], port).items()}
    return [{**shared, **create_slot_env_vars(slot), "PYTHONUNBUFFERED": "1"} for slot in slots], server


def run(function: Callable[..., Any], args: tuple, num_proc: int, env: dict[str, str]) -> list[Any]:
    """Call ``function(*args)`` on ``num_proc`` local Horovod ranks; their return values, by rank.

    When a rank exits with a non-zero code, the others are stopped and ``RankExited`` names the
    first one. ``Interrupted`` (a signal to this process) stops every rank before it propagates.
    """
    environments, server = _rank_environments(num_proc)
    ranks: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="dlfusion-ranks-") as folder:
            job = Path(folder) / "job.pickle"
            job.write_bytes(pickle.dumps((function, args)))
            results = [Path(folder) / f"result-{rank}.pickle" for rank in range(num_proc)]
            for rank, rank_env in enumerate(environments):
                ranks.append(
                    subprocess.Popen(
                        [sys.executable, "-m", __name__, str(job), str(results[rank])],
                        env={**os.environ, **env, **rank_env},
                        start_new_session=True,  # a terminal's Ctrl-C reaches this process only
                    )
                )
            _wait(ranks)
            return [pickle.loads(result.read_bytes()) for result in results]
    finally:
        for process in ranks:
            if process.poll() is None:
                processes.stop_tree(process.pid, grace_s=2)
        server.stop()


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


def _main(job_file: str, result_file: str) -> None:
    function, args = pickle.loads(Path(job_file).read_bytes())
    result = function(*args)
    partial = Path(result_file + ".tmp")
    partial.write_bytes(pickle.dumps(result))
    partial.rename(result_file)


if __name__ == "__main__":
    _main(*sys.argv[1:])
