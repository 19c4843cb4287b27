"""The typed contract of a kind's parts: what each ``Kind`` reference must point at.

Each part is a function (or, for ``task``, a class) that the shared stages call with exactly these
parameters; ``check`` compares a kind's parts with them, and tests run it on every installed kind.
Heavy types are named for the reader only: this module imports neither Spark nor TensorFlow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import mlflow.pyfunc
    from pyspark.sql import SparkSession

    from pipelines.core.catalog import Catalog
    from pipelines.core.config import PipelineBase
    from pipelines.kinds import Kind
    from pipelines.runtime.local_ranks import LocalRanks
    from pipelines.score.scoring import BatchScorer, ScoreInputs


class Ingest(Protocol):
    """Raw data at ``source`` -> the catalog's ingested and quarantine tables; a report dataclass
    whose counts account for every file (or record) seen. ``start_spark()`` returns the SparkSession,
    starting it on the first call: an ingest with no Spark work to do (a few files, an increment
    or a small data set) never pays for a JVM and its workers."""

    def __call__(self, config: PipelineBase, start_spark: Callable[[], SparkSession], source: str) -> Any: ...


class Preprocess(Protocol):
    """Ingested -> one Parquet data set per split and the fitted transform; a report dict with
    ``splits`` (rows per split), ``seconds`` and ``spark_jobs``. ``start_spark`` as for ``Ingest``."""

    def __call__(self, config: PipelineBase, start_spark: Callable[[], SparkSession]) -> dict: ...


class Demo(Protocol):
    """Write the demo raw data under the catalog's workdir (used when ``data.source`` is unset);
    returns where."""

    def __call__(self, catalog: Catalog) -> Path: ...


class ServedModel(Protocol):
    """The MLflow pyfunc to log with the trained Keras model, and input and output examples for its
    signature (both None: no signature)."""

    def __call__(self, transform: Any, model_config: Any) -> tuple[mlflow.pyfunc.PythonModel, Any, Any]: ...


class Evaluate(Protocol):
    """Evaluate the logged model at ``model_uri`` on the test split: its metrics (the kind's
    primary metric among them), files to log into ``artifacts``. ``ranks``, when given, are local
    processes that have TensorFlow loaded, to score on instead of Spark tasks. ``start_spark`` as for
    ``Ingest``: an evaluation on ``ranks`` need not start Spark (the text kind's bag-of-words
    baseline still does)."""

    def __call__(
        self,
        config: PipelineBase,
        start_spark: Callable[[], SparkSession],
        model_uri: str,
        catalog: Catalog,
        artifacts: Path,
        ranks: LocalRanks | None = None,
    ) -> dict[str, float]: ...


class ScoreInput(Protocol):
    """New raw data at ``source`` -> ``score``'s predictions of each usable input, made in the task
    that read it, at ``locations["predictions"]``; what cannot be used at ``locations["quarantined"]``."""

    def __call__(
        self,
        config: PipelineBase,
        spark: SparkSession,
        source: str,
        transform: Any,
        locations: dict[str, str],
        score: BatchScorer,
    ) -> ScoreInputs: ...


# The function parts, by ``Kind`` field; ``task`` is a ``pipelines.train.task.TrainingTask`` subclass.
FUNCTION_PARTS: dict[str, type] = {
    "ingest": Ingest,
    "preprocess": Preprocess,
    "demo": Demo,
    "served_model": ServedModel,
    "evaluate": Evaluate,
    "score_input": ScoreInput,
}


def _shape(signature: inspect.Signature) -> list[tuple[str, Any, bool]]:
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in signature.parameters.values()]


def check(kind: Kind) -> list[str]:
    """What in ``kind`` breaks the contract (empty when nothing): a part that does not import, is
    not callable, or whose parameters (names, order, which have defaults) differ from its Protocol's."""
    from pipelines.core.errors import ConfigError

    problems = []
    for field in FUNCTION_PARTS:
        if getattr(kind, field) is None:
            continue
        try:
            kind.part(field)  # checked there (``mismatch``)
        except (ImportError, AttributeError) as err:
            problems.append(f"{kind.name}.{field}: {getattr(kind, field)} does not import ({err})")
        except ConfigError as err:
            problems.append(str(err))
    return problems


def mismatch(field: str, part: Any) -> str | None:
    """How the function part ``field`` differs from its Protocol, in one line; None when it does not
    (or ``field`` is not a function part)."""
    protocol = FUNCTION_PARTS.get(field)
    if protocol is None:
        return None
    expected = inspect.signature(protocol.__call__)
    expected = expected.replace(parameters=list(expected.parameters.values())[1:])  # no self
    if callable(part) and _shape(inspect.signature(part)) == _shape(expected):
        return None
    found = inspect.signature(part) if callable(part) else "not a function"
    return f"must take {expected}, found {found} (written for another dlfusion? see docs/kinds.md)"
