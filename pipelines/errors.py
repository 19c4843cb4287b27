"""Exceptions that cross process boundaries (Spark executors, Horovod ranks) and still read well."""

from __future__ import annotations


class DlfusionError(Exception):
    """Base class: a failure the user can act on. The CLI prints its message as one line."""


class ConfigError(DlfusionError):
    """A configuration problem; ``key`` is the dotted key or the path at fault."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.key, self.problem))


class DataError(DlfusionError):
    """Input or intermediate data that cannot be used as it is; ``location`` names it."""

    def __init__(self, location: str, problem: str):
        super().__init__(f"{location}: {problem}")
        self.location = location
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.location, self.problem))


class TrainingError(DlfusionError):
    """A Horovod rank failed; ``rank`` is the first rank that raised and ``detail`` its exception."""

    def __init__(self, rank: int, detail: str):
        super().__init__(f"rank {rank} failed: {detail}")
        self.rank = rank
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.rank, self.detail))
