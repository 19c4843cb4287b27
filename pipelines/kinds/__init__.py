"""Pipeline kinds as plug-ins: a package that exports a ``Kind`` and names it in the entry-point
group ``dlfusion.kinds`` (``GROUP``) of its distribution; the three built-in kinds register the same
way, in this project's ``setup.cfg``. A kind outside this repository is one installed package.

A kind declares what its YAML holds, how its raw data is ingested and preprocessed (its own code or
another kind's, so that kinds over the same data share one workdir), how every rank trains it,
which MLflow model it serves, how it is evaluated and which metric ranks its models. Shared stages
take a ``Kind`` and never compare its name.

Parts are ``"module:attribute"`` references, imported when a stage needs them: loading a config
must not import Spark or TensorFlow. What each part must be is ``pipelines.kinds.contract``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass
from typing import Any

from pipelines.core.config import PipelineBase
from pipelines.core.errors import ConfigError
from pipelines.core.stages import KIND_STAGES

GROUP = "dlfusion.kinds"


@dataclass(frozen=True)
class Kind:
    """One pipeline kind. Each ``str`` part is a ``"module:attribute"`` reference (see ``part``)."""

    name: str  # the name its entry point has, and the ``pipeline:`` of its YAML
    config: type[PipelineBase]
    # Each part below is a ``contract`` Protocol of the same name (task: a TrainingTask subclass).
    ingest: str  # raw data -> ingested Parquet (contract.Ingest)
    preprocess: str  # ingested -> split Parquet + fitted transform (contract.Preprocess)
    demo: str  # the demo raw data used when data.source is unset (contract.Demo)
    task: str  # TrainingTask subclass, instantiated on every rank (pipelines.train.task)
    served_model: str  # the pyfunc logged with the model, and its signature's examples
    evaluate: str  # the test metrics of a logged model (contract.Evaluate)
    primary_metric: str  # the test metric that ranks this kind's models
    # new raw data -> model input (contract.ScoreInput); None when the model takes no input data
    score_input: str | None = None
    higher_is_better: bool = True
    # (model metric, the same metric of a trivial baseline on the same test rows), both in the
    # evaluation's metrics: the model is promoted only if it beats the baseline by
    # ``promote.baseline_margin`` (higher is better for both). None: the kind has no baseline.
    baseline: tuple[str, str] | None = None
    # More (model metric, baseline metric) pairs the evaluate stage prints, never gated on (the
    # text kind's bag-of-words model).
    comparisons: tuple[tuple[str, str], ...] = ()
    # Its models learn the labels: the class rules of ``validate.*`` apply (two classes at least,
    # every class in train, no content under two labels). False for a generative model.
    learns_classes: bool = True
    stages: tuple[str, ...] = KIND_STAGES  # the chained stages it runs, in the table's order

    def part(self, name: str) -> Any:
        """Import and return the part ``name`` (e.g. ``kind.part("demo")(catalog)``). A function
        part whose parameters are not its Protocol's (``contract``) is a one-line ConfigError."""
        from pipelines.kinds import contract

        part = pkgutil.resolve_name(getattr(self, name))
        problem = contract.mismatch(name, part)
        if problem:
            raise ConfigError(f"{self.name}.{name}", f"{getattr(self, name)} {problem}")
        return part


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {point.name: point for point in importlib.metadata.entry_points(group=GROUP)}


def registered() -> tuple[str, ...]:
    """The names of the installed kinds (entry points of ``GROUP``), sorted."""
    return tuple(sorted(_entry_points()))


def kind_named(name: object) -> Kind:
    """The installed kind called ``name`` (its entry point loaded).

    Raises:
        ConfigError: on the ``pipeline`` key when ``name`` is missing or not installed, or when its
            entry point is not a ``Kind`` of that name.
    """
    points = _entry_points()
    if name not in points:
        problem = "required key is missing" if name is None else f"unknown pipeline {name!r}"
        raise ConfigError("pipeline", f"{problem} (one of: {', '.join(registered())})")
    point = points[str(name)]
    kind = point.load()
    if not isinstance(kind, Kind) or kind.name != name:
        raise ConfigError("pipeline", f"entry point {name} = {point.value} is not a Kind named {name!r}")
    return kind


def kind_of(config: PipelineBase) -> Kind:
    """The kind a validated config drives."""
    return kind_named(config.pipeline)
