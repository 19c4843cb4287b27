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


class ValidationError(DlfusionError):
    """A data set breaks a ``validate.*`` rule: the rule's key, the measured value and the limit."""

    def __init__(self, rule: str, measured: str, limit: str):
        super().__init__(f"the data fail validate.{rule}: {measured} ({limit}); nothing was trained on them")
        self.rule = rule
        self.measured = measured
        self.limit = limit

    def __reduce__(self):
        return (type(self), (self.rule, self.measured, self.limit))


class TrainingError(DlfusionError):
    """A Horovod rank failed; ``rank`` is the first rank that raised and ``detail`` its exception."""

    def __init__(self, rank: int, detail: str):
        super().__init__(f"rank {rank} failed: {detail}")
        self.rank = rank
        self.detail = detail

    def __reduce__(self):
        return (type(self), (self.rank, self.detail))


class ResourceError(DlfusionError):
    """The data did not fit in the memory Spark was given; the message names the setting to raise."""


class TrackingError(DlfusionError):
    """The MLflow tracking server cannot be used; the message names the URI (without credentials)."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the driver. A BaseException like KeyboardInterrupt, so that no
    ``except Exception`` on the way up swallows it; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int):
        import signal

        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.signal_name}")


def describe(err: BaseException) -> str:
    """One line for an error nobody anticipated: its type and message. For a Spark failure, the root
    cause's (the first lines say only "Job aborted due to stage failure"), and for a Python
    exception in a Spark task, the last line of its trace."""
    java = getattr(err, "java_exception", None) or getattr(err, "_origin", None)
    text = f"{type(err).__name__}: {err}"
    if java is not None:
        try:
            while java.getCause() is not None and not java.getCause().equals(java):
                java = java.getCause()
            text = str(java.toString())
        except Exception:  # the JVM is gone: keep the Python-side text
            pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:  # a Python worker's exception: its last line
        lines = lines[-1:]
    return lines[0][:500] if lines else type(err).__name__
