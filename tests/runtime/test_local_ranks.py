"""The local launcher's ranks: real processes, rendezvous on loopback, exits reported by rank."""

from __future__ import annotations

import contextlib
import ipaddress

import psutil
import pytest

from pipelines.core.errors import DataError
from pipelines.runtime import local_ranks
from tests.support.rank_functions import (
    data_error_on_rank_zero,
    extras_found_in_preload_and_in_the_job,
    fail_on_rank_one,
    rank_and_size,
    recall,
    remember,
)


def test_each_rank_runs_the_function_with_its_horovod_environment():
    assert local_ranks.run(rank_and_size, (), num_proc=3, env={}) == [("0", "3"), ("1", "3"), ("2", "3")]


def test_the_same_ranks_run_one_job_after_another_and_end_when_closed():
    with local_ranks.LocalRanks(2, {}) as ranks:
        ranks.run(remember, ("warm",))
        assert ranks.run(recall, ()) == ["0:warm", "1:warm"]
    assert [process.returncode for process in ranks._ranks] == [0, 0]


def test_ranks_preload_without_scikit_learn_or_pyplot_which_jobs_can_still_import():
    with local_ranks.LocalRanks(1, {}, ("tests.support.optional_extras",)) as ranks:
        found, imported = ranks.run(extras_found_in_preload_and_in_the_job, ())[0]
    assert found == {"sklearn": False, "matplotlib.pyplot": False}
    assert imported == ["sklearn", "matplotlib.pyplot"]


def test_a_rank_that_exits_non_zero_is_named_with_its_code_and_no_rank_is_left():
    with local_ranks.LocalRanks(2, {}) as ranks:
        with pytest.raises(local_ranks.RankExited) as caught:
            ranks.run(fail_on_rank_one, ())
        pids = [process.pid for process in ranks._ranks]
    assert caught.value.exits == ((1, 3),)
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_a_jobs_exception_on_a_rank_is_raised_by_the_launcher():
    with local_ranks.LocalRanks(2, {}) as ranks:
        with pytest.raises(DataError, match="/data/x: cannot be read"):
            ranks.run(data_error_on_rank_zero, ())


def test_a_rank_exit_passes_through_context_managers_as_it_is():
    with (
        pytest.raises(local_ranks.RankExited),
        contextlib.ExitStack(),
        local_ranks.LocalRanks(2, {}) as ranks,
    ):
        with contextlib.nullcontext(), contextlib.suppress(KeyError):
            ranks.run(fail_on_rank_one, ())


def test_the_rendezvous_server_listens_on_loopback_only():
    environments, server = local_ranks._rank_environments(2)
    port = int(environments[0]["HOROVOD_GLOO_RENDEZVOUS_PORT"])
    try:
        addresses = [
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
    finally:
        server.stop()
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def test_a_finished_rendezvous_scope_is_cleared_whatever_order_the_ranks_leave_the_scopes_in():
    """Horovod's server forgot which ranks had left every scope whenever one scope completed. When
    rank 1 left its own cross scope before rank 0 left the local one, the local scope kept the
    ranks' addresses, and the next ``hvd.init`` on the kept ranks connected to a closed port (Gloo:
    "Connection refused", both ranks aborted, and every later training on them failed)."""
    import urllib.error
    import urllib.request

    environments, server = local_ranks._rank_environments(2)
    base = f"http://127.0.0.1:{environments[0]['HOROVOD_GLOO_RENDEZVOUS_PORT']}"

    def call(method: str, path: str, data: bytes | None = None) -> int:
        request = urllib.request.Request(base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    try:
        for rank in (0, 1):  # both ranks' addresses, as Gloo publishes them
            assert call("PUT", f"/local_localhost/{rank}", b"address") == 200
        call("DELETE", "/local_localhost/1")  # rank 1 leaves the local scope,
        call("DELETE", "/cross_1/1")  # completes its own one-rank cross scope,
        call("DELETE", "/local_localhost/0")  # and only then rank 0 leaves the local scope
        assert call("GET", "/local_localhost/0") == 404
    finally:
        server.stop()
