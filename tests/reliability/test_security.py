"""Servers the project starts listen on loopback unless configured otherwise."""

from __future__ import annotations

import inspect
import ipaddress
import os
from pathlib import Path

import psutil

from pipelines.track import mlflow_server


def _listening(pids: set[int]) -> list[str]:
    return [
        connection.laddr.ip
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids
    ]


def test_a_local_spark_listens_on_loopback_only(spark):
    jvms = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True) if "java" in p.name()}
    addresses = _listening(jvms)
    assert addresses, "the Spark JVM listens on nothing?"
    outside = [a for a in addresses if not ipaddress.ip_address(a.removeprefix("::ffff:")).is_loopback]
    assert outside == []


def test_the_mlflow_server_binds_to_loopback_by_default(tmp_path):
    from pipelines.cli import build_parser

    assert build_parser().parse_args(["mlflow-server"]).host == "127.0.0.1"  # dlfusion mlflow-server
    host = inspect.signature(mlflow_server.start).parameters["host"].default  # tests, make mlflow
    command = mlflow_server.server_command(Path(tmp_path), host, 5000)
    assert command[command.index("--host") + 1] == "127.0.0.1"
