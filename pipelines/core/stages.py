"""The stage table: every ``dlfusion`` stage, in the order a run goes through them.

The one place stages are listed. The command line and its help, the runner, freshness, the
``jobs/`` entry points, the Airflow DAG and the tests all take the names and properties from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """What every stage returns: ``summary`` joins the run's summary (``--summary-json``; its keys are
    the stage's own), ``lines`` are what ``dlfusion`` prints for it."""

    summary: dict[str, Any]
    lines: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    # ``"module:function"`` of the stage, taking the config (and the options below) and returning a
    # StageResult; imported only when the stage runs (TensorFlow and MLflow take seconds to import).
    entry: str | None = None
    # In the chain a run goes through (each reads the output of the one before it): its success is
    # recorded, so that an unchanged re-run skips it (``--force`` runs it anyway).
    chained: bool = True
    # Every kind runs it in ``dlfusion run``; else only when its config section enables it.
    always: bool = True
    # Talks to MLflow: the CLI checks the tracking server before any work.
    tracked: bool = False
    # One record per kind (kinds sharing one preprocessed data set train their own models).
    per_kind: bool = False
    # The config sections its result depends on; None: every key no other stage owns.
    config_sections: tuple[str, ...] | None = ()
    # Runs on the local launcher's Horovod ranks, which the stages of one run share.
    on_ranks: bool = False
    # Runs whenever asked, with no success record to skip by (no ``--force``).
    always_runs: bool = False


STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "read the raw data (image folders, text files) into Parquet; bad input is quarantined",
        entry="pipelines.ingest.stage:run",
        config_sections=("data", "ingest"),
    ),
    Stage(
        "preprocess",
        "split, profile and validate the data, fit the transform on train, write Parquet for streaming",
        entry="pipelines.preprocess.stage:run",
        config_sections=("preprocess", "validate"),
    ),
    Stage(
        "train",
        "train with Horovod on Petastorm-streamed data, log to MLflow",
        entry="pipelines.train.stage:run",
        tracked=True,
        per_kind=True,
        config_sections=None,
        on_ranks=True,
    ),
    Stage(
        "evaluate",
        "evaluate the model on the test split and log to the training's MLflow run",
        entry="pipelines.evaluate.stage:run",
        tracked=True,
        per_kind=True,
        on_ranks=True,
    ),
    Stage(
        "promote",
        "register the model; move the 'champion' alias only if it beats the champion",
        entry="pipelines.promote.stage:run",
        always=False,
        tracked=True,
        per_kind=True,
        config_sections=("promote",),
        on_ranks=True,
    ),
    Stage(
        "score",
        "predict new raw data with a logged model (default: the champion) into Parquet",
        entry="pipelines.score.stage:run",
        chained=False,
        tracked=True,
        always_runs=True,
    ),
    Stage(
        "run",
        "ingest, preprocess, train, evaluate (and promote when promote.enabled), in order",
        chained=False,
        tracked=True,
    ),
)

BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
CHAIN: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.chained)
# What a kind runs in ``dlfusion run`` unless it declares fewer.
KIND_STAGES: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.chained and stage.always)

# The chained stage ``dlfusion`` is in now (set by the runner), so that a failure's summary names it.
running: str | None = None
