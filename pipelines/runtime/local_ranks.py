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

``python -m pipelines.runtime.local_ranks FOLDER RANK [MODULE...]`` is one rank: it imports the modules,
then for N = 0, 1, ... waits for FOLDER/job-N.pickle, unpickles ``(function, args)`` from it, calls
it and pickles the return value to FOLDER/result-N-RANK.pickle, until FOLDER/close appears. A rank
kept between jobs keeps what it imported: a later job (evaluating the trained model) does not pay
for TensorFlow's import again.
"""

from __future__ import annotations

import importlib
import itertools
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

from pipelines.core.errors import DlfusionError
from pipelines.runtime import processes


class RankExited(Exception):
    """Ranks that ended before writing their result, with their exit codes (-N: killed by signal
    N), as (rank, code) pairs: the first one seen, and any other seen gone at the same poll."""

    def __init__(self, exits: tuple[tuple[int, int], ...]):
        super().__init__(exits)
        self.exits = exits

    def __str__(self) -> str:
        return ", ".join(f"rank {rank} exited with code {code}" for rank, code in self.exits)


@dataclass(frozen=True)
class _Failed:
    """A job's exception, as its rank's result (the exception itself when it pickles)."""

    error: Exception


def _rank_environments(num_proc: int) -> tuple[list[dict[str, str]], Any]:
    """Horovod's rendezvous server, started, and what its Gloo launcher (``gloo_run``) exports to
    each rank on one host: (one environment per rank, the server)."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.gloo_run import create_run_env_vars, create_slot_env_vars
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer, RendezvousServer
    from horovod.runner.util.threads import in_thread

    class ScopeHandler(RendezvousHandler):
        """Horovod's handler, clearing a scope once every rank has left it (``hvd.init`` leaves the
        global, local and cross scopes in turn). Horovod's own forgets which ranks left *every*
        scope when one completes: when rank 1 completed its one-rank cross scope before rank 0 left
        the local scope, the local scope kept both ranks' addresses, and the next ``hvd.init`` on
        ranks kept between jobs connected to a closed port (Gloo aborts both ranks)."""

        def do_DELETE(self) -> None:
            parts, server = self.path.split("/"), self.server
            if len(parts) != 3 or parts[1] not in server.scope_size:  # errors and ad-hoc scopes
                return super().do_DELETE()
            _, scope, key = parts
            with server.finished_list_lock:
                finished = server.finished_list[scope]
                finished.append(key)
                if len(set(finished)) >= server.scope_size[scope]:
                    with server.cache_lock:
                        server.cache.pop(scope, None)
                    del server.finished_list[scope]
            self.send_status_code(200)

    class LoopbackRendezvous(RendezvousServer):
        """Horovod's rendezvous server on 127.0.0.1 only: its own ``start`` binds every interface."""

        def start(self, handler_cls=None) -> int:
            self._httpd = RendezvousHTTPServer(("127.0.0.1", 0), handler_cls or ScopeHandler, 0)
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
    rank's TensorFlow, 3-4 s) while the caller prepares the first job, then runs ``run`` calls one
    after the other.

    Use as a context manager: leaving it ends the ranks and the rendezvous server. Ranks still
    alive 2 s later are stopped, and at once when leaving on an exception or before any job.
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
        self._jobs = 0

    def run(self, function: Callable[..., Any], args: tuple) -> list[Any]:
        """Call ``function(*args)`` on every rank; their return values, by rank.

        When ``function`` raises on a rank, that exception is raised here (the lowest rank's, if
        several). When a rank exits before its result is written, ``RankExited`` names the first one
        (leaving the context then stops the others, as Horovod's launcher does: they would wait).
        """
        job, self._jobs = self._jobs, self._jobs + 1
        _write_atomically(self._folder / _job(job), pickle.dumps((function, args)))
        results = [self._folder / _result(job, rank) for rank in range(len(self._ranks))]
        _wait(self._ranks, results)
        values = [pickle.loads(result.read_bytes()) for result in results]
        failed = next((value for value in values if isinstance(value, _Failed)), None)
        if failed is not None:
            raise failed.error
        return values

    def __enter__(self) -> LocalRanks:
        return self

    def __exit__(self, error_type, *exc) -> None:
        (self._folder / _CLOSE).touch()
        # After a failure the other ranks may wait on a collective that never completes, and ranks
        # that had no job may still be importing: stop them.
        deadline = time.monotonic() + (2 if self._jobs and not error_type else 0)
        for process in self._ranks:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                processes.stop_tree(process.pid, grace_s=2)
        self._server.stop()
        shutil.rmtree(self._folder, ignore_errors=True)


def run(function: Callable[..., Any], args: tuple, num_proc: int, env: dict[str, str]) -> list[Any]:
    """Call ``function(*args)`` on ``num_proc`` local Horovod ranks started for it (``LocalRanks``)."""
    with LocalRanks(num_proc, env) as ranks:
        return ranks.run(function, args)


_CLOSE = "close"


def _job(job: int) -> str:
    return f"job-{job}.pickle"


def _result(job: int, rank: int) -> str:
    return f"result-{job}-{rank}.pickle"


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    partial.rename(path)


def _wait(ranks: list[subprocess.Popen], results: list[Path], poll_s: float = 0.02) -> None:
    """Wait until every rank has written its result; when a rank exits first, raise ``RankExited``
    (the caller stops the others, as Horovod's launcher does: they would wait on the missing rank)."""
    while not all(result.exists() for result in results):
        exits = [(rank, process.poll()) for rank, process in enumerate(ranks) if not results[rank].exists()]
        gone = tuple((rank, code) for rank, code in exits if code is not None)
        if gone:
            raise RankExited(gone)
        time.sleep(poll_s)


# Optional packages that Keras imports only for features no rank uses, and falls back without:
# scikit-learn (its wrappers) and pyplot (its image-gallery plots). Hiding them while the rank
# imports saved 0.7 s of CPU (scikit-learn; of a rank's 4 s of imports: TensorFlow, Keras, Horovod)
# and then 0.2 s more (pyplot's backend machinery; 3.2 -> 3.0 s, median of 4 pairs on 2026-12-08).
# TensorFlow's own modules are 2.0 s of what is left. Both stay importable afterwards: the ranks'
# own plots use matplotlib's Figure, not pyplot.
_UNUSED_BY_RANKS = ("sklearn", "matplotlib.pyplot")


def _import_hiding_unused(modules: tuple[str, ...]) -> None:
    """Import ``modules`` with ``_UNUSED_BY_RANKS`` hidden, then importable again."""
    hidden = [name for name in _UNUSED_BY_RANKS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # `import name` raises ImportError (the import system's rule)
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _main(folder: str, rank: str, *preload: str) -> None:
    """One rank: import ``preload``, then run each job handed over and write its result, until the
    launcher closes (or is gone)."""
    _import_hiding_unused(preload)
    folder_path, launcher = Path(folder), os.getppid()
    for job in itertools.count():
        handed = folder_path / _job(job)
        while not handed.exists():
            if (folder_path / _CLOSE).exists():
                _leave()
            if os.getppid() != launcher:  # the launcher died without closing
                sys.exit(1)
            time.sleep(0.02)
        function, args = pickle.loads(handed.read_bytes())
        result = folder_path / _result(job, int(rank))
        try:
            value = function(*args)
        except Exception as err:  # for the launcher to raise; the rank then ends as it would
            _write_atomically(result, _pickled_failure(err))
            if isinstance(err, DlfusionError):  # one line, which the launcher says: no traceback
                sys.exit(1)
            raise
        _write_atomically(result, pickle.dumps(value))


def _pickled_failure(err: Exception) -> bytes:
    try:
        return pickle.dumps(_Failed(err))
    except Exception:  # an exception that does not pickle: its type and first line
        return pickle.dumps(
            _Failed(RuntimeError(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"))
        )


def _leave() -> None:
    """End the rank when the launcher closes: leave Horovod (a peer still at work sees a clean
    shutdown, not a lost connection), flush the streams, and skip the interpreter's teardown,
    which took 1.8 s with TensorFlow loaded (the demo's ranks)."""
    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is not None and hvd.is_initialized():
        hvd.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    # Run as the importable module, not as __main__, so that what a rank pickles (its job's failure)
    # unpickles in the launcher.
    importlib.import_module("pipelines.runtime.local_ranks")._main(*sys.argv[1:])
