"""Functions the launcher tests run on local ranks (importable by the ranks' interpreters)."""

from __future__ import annotations

import os


def rank_and_size() -> tuple[str, str]:
    return os.environ["HOROVOD_RANK"], os.environ["HOROVOD_SIZE"]


def fail_on_rank_one() -> None:
    if os.environ["HOROVOD_RANK"] == "1":
        raise SystemExit(3)


def remember(value: str) -> None:
    global _remembered
    _remembered = value


def recall() -> str:
    return f"{os.environ['HOROVOD_RANK']}:{_remembered}"


def data_error_on_rank_zero() -> str:
    from pipelines.core.errors import DataError

    if os.environ["HOROVOD_RANK"] == "0":
        raise DataError("/data/x", "cannot be read")
    return "fine"


def extras_found_in_preload_and_in_the_job() -> tuple[dict, list[str]]:
    import importlib

    from tests.support import optional_extras

    return optional_extras.FOUND, [importlib.import_module(name).__name__ for name in optional_extras.FOUND]
