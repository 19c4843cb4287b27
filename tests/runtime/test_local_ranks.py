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
