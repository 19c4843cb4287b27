"""One typed configuration for every pipeline (pydantic): the sections every kind shares.

A kind adds its own in its folder (``pipelines/kinds/<kind>/config.py``). Reading the YAML files and
KEY=VALUE overrides into a validated config is ``pipelines.pipeline.config_files.load_config``: every
problem becomes a ConfigError naming the dotted key or the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from pipelines.core.catalog import Catalog

BASE_CONFIG_NAME = "base.yaml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConfig(Section):
    master: str | None = Field(
        None, description="Spark master URL; unset means spark-submit's master, else local[*]"
    )
    app_name: str = Field("dlfusion", description="Spark application name")
    conf: dict[str, str] = Field(default_factory=dict, description="extra Spark settings")


class SplitConfig(Section):
    train: float = Field(0.8, gt=0, lt=1, description="fraction of files in the train split")
    val: float = Field(0.1, ge=0, lt=1, description="fraction of files in the validation split")
    test: float = Field(0.1, gt=0, lt=1, description="fraction of files in the test split")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {total:g})")
        return self


class PreprocessConfig(Section):
    split: SplitConfig = Field(default_factory=SplitConfig, description="split fractions")
    rows_per_row_group: int = Field(
        128, ge=1, description="Parquet row-group size; Petastorm hands whole row groups to ranks"
    )
    compression: Literal["none", "snappy", "zstd", "lz4_raw"] = Field(
        "snappy", description="Parquet codec of the splits"
    )
    refit: bool = Field(
        False,
        description="fit the transform again after an incremental ingest (it is kept otherwise, unless "
        "the classes changed or the drift passed validate.max_drift)",
    )


class EarlyStoppingConfig(Section):
    enabled: bool = Field(False, description="stop when the metric stops improving; keep the best epoch")
    metric: str = Field("val_loss", description="epoch metric to watch (rank-averaged or global)")
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="min or max is better; auto: min for losses and distances, else max"
    )
    patience: int = Field(3, ge=0, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")

    @property
    def direction(self) -> Literal["min", "max"]:
        if self.mode != "auto":
            return self.mode
        return "min" if self.metric.endswith(("loss", "distance")) else "max"


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, description="number of epochs")
    batch_size: int = Field(32, ge=1, description="batch size per rank")
    num_proc: int = Field(2, ge=1, description="number of Horovod ranks")
    launcher: Literal["local", "spark"] = Field(
        "local", description="local Gloo processes or Spark executors (horovod.spark.run)"
    )
    learning_rate: float = Field(0.001, gt=0, description="learning rate for one rank")
    warmup_epochs: float = Field(1.0, ge=0, description="epochs to ramp the lr to lr * num_proc")
    shuffle_buffer: int = Field(
        512, ge=0, description="rows shuffled together: whole row groups, at least this many rows"
    )
    reader_workers: int = Field(
        1, ge=1, description="Petastorm readers per rank, each reading its part of the rank's row groups"
    )
    seed: int = Field(42, description="seed for weights and row-group shuffling")
    resume: bool = Field(False, description="continue from the last checkpoint in workdir")
    init_from: str = Field(
        "none",
        min_length=1,
        description="champion | RUN_ID | none: start from that model's weights (fine-tuning on grown "
        "data) instead of from scratch; from scratch, with one line saying why, when its classes "
        "or layers differ",
    )
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = Field(
        "float32",
        description="compute dtype on the ranks (variables stay float32; mixed_float16 scales the "
        "loss); the saved model computes in float32 and takes and returns what it did",
    )
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight classes by inverse train frequency (imbalanced data)"
    )
    stall_timeout_s: int = Field(
        120, ge=10, description="a rank waiting this long for the others fails the job"
    )
    start_timeout_s: int = Field(
        120, ge=5, description="launcher=spark: seconds for every rank's Spark task to start and register"
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)


class PretrainedWeights(Section):
    """A ``model`` section whose model can start from pre-trained weights: the driver fetches what
    ``weights`` names (an MLflow model, a file on an object store) before the ranks start."""

    weights: str = Field(
        "none",
        min_length=1,
        description="none | a Keras weights file (.h5 or .weights.h5, a path or URI; e.g. Keras' "
        "ImageNet 'notop' file) | a dlfusion model (a .keras file, runs:/RUN_ID/model, "
        "models:/NAME@ALIAS) whose backbone starts this one. Nothing is downloaded from the internet",
    )


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; unset means a SQLite file under workdir"
    )
    experiment: str = Field("dlfusion", description="MLflow experiment name")
    registered_model: str | None = Field(
        None, description="register the trained model under this name (alias 'candidate')"
    )


class PromoteConfig(Section):
    enabled: bool = Field(False, description="dlfusion run ends with the promote stage")
    min_delta: float = Field(
        0.0, ge=0, description="a new model takes the champion alias only if better by at least this"
    )
    baseline_margin: float = Field(
        0.05,
        ge=0,
        description="a model is registered but never promoted unless it beats its kind's trivial "
        "baseline by at least this (classifiers: the majority class's test macro-F1)",
    )


class ValidateConfig(Section):
    """The rules a preprocessed data set must pass before anything trains on it (see the data
    profile); an unset limit is not checked."""

    mode: Literal["fail", "warn"] = Field(
        "fail",
        description="fail: a broken rule stops the stage; warn: it is a warning in the summary and run",
    )
    min_classes: int = Field(2, ge=0, description="fewest distinct classes (classifiers)")
    min_train_rows_per_class: int = Field(
        1, ge=0, description="fewest rows of every class in the train split (classifiers)"
    )
    max_cross_label_fraction: float | None = Field(
        0.01,
        ge=0,
        description="largest fraction of rows labelled otherwise than the most common label of the "
        "same content (the same image or text under two labels)",
    )
    max_imbalance: float | None = Field(
        None, ge=1, description="largest ratio of the biggest class's rows to the smallest's"
    )
    max_duplicate_fraction: float | None = Field(
        None, ge=0, description="largest fraction of rows whose content appears more than once"
    )
    max_cross_split_fraction: float | None = Field(
        None, ge=0, description="largest fraction of rows whose content is in two splits (leakage)"
    )
    max_drift: float | None = Field(
        None,
        ge=0,
        description="largest population stability index of the class or shape distribution "
        "against the previous preprocess",
    )


class RetentionConfig(Section):
    """What a workdir keeps of earlier runs (a nightly job adds one a night); unset: everything.
    Models stay in MLflow, which has its own ``mlflow gc`` for deleted runs."""

    checkpoints: int | None = Field(
        None,
        ge=1,
        description="newest runs whose checkpoints/RUN_ID folder (model, checkpoint, best weights) is "
        "kept; older ones are deleted after each successful training",
    )
    logs: int | None = Field(None, ge=1, description="newest run log files kept in workdir/logs")
    snapshots: int | None = Field(
        None,
        ge=1,
        description="newest ingest snapshots kept in workdir/ingest/snapshots (each lists the files "
        "an ingest saw; trainings log theirs to MLflow)",
    )


class ScoreConfig(Section):
    model_uri: str | None = Field(
        None,
        description="model to score with; unset: models:/<mlflow.registered_model>@champion, "
        "else this kind's latest training",
    )
    output: str | None = Field(
        None, description="folder for predictions/, quarantine/ and report.json; unset: workdir/scores"
    )


def _workdir(value: Any) -> Any:
    """A local path stays a ``Path`` (a ``file:`` URI becomes one); another file system's URI
    (``s3://bucket/work``) a ``locations.Uri``, which ``pathlib`` would fold into ``s3:/bucket/work``."""
    from pipelines.core import locations

    if isinstance(value, Path | locations.Uri):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a path or a URI")
    return locations.Uri(value) if locations.is_uri(value) else locations.require_local(value, "workdir")


# The workdir: a local path or a URI (see ``pipelines.core.catalog``); written out as its text.
Workdir = Annotated[Any, PlainValidator(_workdir), PlainSerializer(str, when_used="json")]


class PipelineBase(Section):
    """Keys every kind shares; a kind's config class adds ``pipeline`` and its own sections."""

    # ``validate`` is a BaseModel method: the section's field is ``validation``, its key ``validate``.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, serialize_by_alias=True, validate_by_name=True
    )

    pipeline: str = Field(description="which pipeline kind this config drives")
    workdir: Workdir = Field(
        Path("work"), description="root for all outputs of a run: a local path or a URI (s3://, hdfs://)"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    @property
    def tracking_uri(self) -> str:
        """The configured tracking URI, or the SQLite database under workdir (a local workdir only:
        ConfigError for a URI)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        from pipelines.core.locations import require_local

        local = require_local(
            self.workdir, "the default MLflow database (SQLite; or set mlflow.tracking_uri)"
        )
        return f"sqlite:///{Catalog.for_workdir(local).mlflow_database}"


# Any kind's config: the classes live in the kinds' folders (``pipelines.kinds``).
PipelineConfig = PipelineBase


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections -> dotted keys: {'train': {'epochs': 2}} -> {'train.epochs': 2}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
