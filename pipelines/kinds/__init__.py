"""Pipeline kinds as plug-ins: one folder under ``pipelines/kinds`` and one line in ``REGISTRY``.

A kind declares what its YAML holds, how its raw data is ingested and preprocessed (its own code or
another kind's, so that kinds over the same data share one workdir), how every rank trains it,
which MLflow model it serves, how it is evaluated and which metric ranks its models. Shared stages
take a ``Kind`` and never compare its name; this file is the only place the names appear.

Parts are ``"module:attribute"`` references, imported when a stage needs them: loading a config
must not import Spark or TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pipelines.config import PipelineBase
from pipelines.errors import ConfigError
from pipelines.stages import KIND_STAGES

REGISTRY: dict[str, str] = {
    "image_cnn": "pipelines.kinds.image_cnn",
    "text_lstm": "pipelines.kinds.text_lstm",
    "image_gan": "pipelines.kinds.image_gan",
}


@dataclass(frozen=True)
class Kind:
    """One pipeline kind. Each ``str`` part is a ``"module:attribute"`` reference (see ``part``)."""

    name: str
    config: type[PipelineBase]
    ingest: str  # (config, spark, source) -> report dataclass: raw data -> ingested Parquet
    preprocess: str  # (config, spark) -> report dict: ingested -> split Parquet + fitted transform
    demo: str  # (catalog) -> path: writes the demo raw data used when data.source is unset
    task: str  # TrainingTask subclass, instantiated on every rank (pipelines.training)
    served_model: str  # (transform, model config) -> (mlflow PythonModel, input example)
    evaluate: str  # (config, spark, model_uri, catalog, artifacts, ranks) -> metrics (pipelines.evaluation)
    primary_metric: str  # the test metric that ranks this kind's models
    # (config, spark, source, transform, locations) -> ScoreInputs: new raw data -> model input
    # (pipelines.scoring); None when the kind's model takes no input data (a generator)
    score_input: str | None = None
    higher_is_better: bool = True
    stages: tuple[str, ...] = KIND_STAGES  # the chained stages it runs, in the table's order

    def part(self, name: str) -> Any:
        """Import and return the part ``name`` (e.g. ``kind.part("ingest")(config, spark, source)``)."""
        module, _, attribute = getattr(self, name).partition(":")
        return getattr(importlib.import_module(module), attribute)


def kind_named(name: object) -> Kind:
    """The registered kind called ``name``.

    Raises:
        ConfigError: on the ``pipeline`` key when ``name`` is missing or not registered.
    """
    if name not in REGISTRY:
        problem = "required key is missing" if name is None else f"unknown pipeline {name!r}"
        raise ConfigError("pipeline", f"{problem} (one of: {', '.join(REGISTRY)})")
    return importlib.import_module(REGISTRY[str(name)]).KIND


def kind_of(config: PipelineBase) -> Kind:
    """The kind a validated config drives."""
    return kind_named(config.pipeline)
