"""The image classifier's configuration: a class-per-folder image tree, ingest, the CNN."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import PipelineBase, PreprocessConfig, PretrainedWeights, Section, TrainConfig

_MB = 1024 * 1024


class ImageDataConfig(Section):
    source: str | None = Field(
        None, description="raw input: a folder with one sub-folder per class; unset writes the demo"
    )


class IngestConfig(Section):
    image_size: int = Field(32, ge=8, le=224, description="images are resized to this square size")
    task_bytes: int = Field(
        64 * _MB, ge=1, description="raw bytes of files per Spark task (tasks also stop at task_files)"
    )
    task_files: int = Field(1000, ge=1, description="most files per Spark task")
    batch_bytes: int = Field(
        16 * _MB, ge=1024, description="decoded pixel bytes a task holds before writing them"
    )
    driver_increment_files: int = Field(
        2000,
        ge=0,
        description="an ingest that reads at most this many files (the new or changed ones, or all of "
        "them the first time), of at most task_bytes, decodes them in the driver process, without "
        "starting Spark (0: always in Spark tasks)",
    )
    compact_files: int = Field(
        8,
        ge=1,
        description="an incremental ingest merges a split's small files (under 8 row groups each) "
        "once there are more than this many",
    )
    row_group_bytes: int = Field(
        32 * _MB,
        ge=1024 * 64,
        description="Parquet row-group size of the predictions `dlfusion score` writes (ingested images "
        "come in row groups of preprocess.rows_per_row_group rows, what the ranks stream)",
    )
    compression: Literal["none", "snappy", "zstd", "lz4_raw"] = Field(
        "none",
        description="Parquet codec of the ingested pixels (raw pixels barely compress; snappy costs CPU)",
    )


class AugmentConfig(Section):
    """Random changes to the train split's images on the ranks (Keras preprocessing layers in the
    training model: never applied to validation, test, scoring or the served model)."""

    flip: bool = Field(False, description="random horizontal flips (not for digits or text in images)")
    crop: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="random shifts up to this fraction of the side, edges reflected; 0: off",
    )
    rotation: float = Field(
        0.0, ge=0, le=0.5, description="random rotations up to this fraction of a turn; 0: off"
    )
    contrast: float = Field(
        0.0, ge=0, lt=1, description="random brightness and contrast changes up to this fraction; 0: off"
    )


class ImagePreprocessConfig(PreprocessConfig):
    compression: Literal["none", "snappy", "zstd", "lz4_raw"] = Field(
        "none",
        description="Parquet codec of the splits; while it, the split and the row-group size are "
        "ingest's, preprocess publishes ingest's files as the splits (no pixel read again)",
    )


class ImageTrainConfig(TrainConfig):
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    freeze_backbone_epochs: int = Field(
        0,
        ge=0,
        description="epochs that train only the layers after model.backbone, before it is unfrozen "
        "(at fine_tune_learning_rate)",
    )
    fine_tune_learning_rate: float | None = Field(
        None,
        gt=0,
        description="learning rate for one rank once the backbone is unfrozen; unset: learning_rate / 10",
    )


class ModelConfig(PretrainedWeights):
    backbone: Literal["seed_cnn", "mobilenet_v3_small", "resnet50"] = Field(
        "seed_cnn",
        description="seed_cnn (the CNN below) or a keras.applications model (ingest.image_size >= 32)",
    )
    filters: list[int] = Field([32, 64, 128], description="seed_cnn: filters of each Conv-Pool block")
    dense_units: int = Field(128, ge=1, description="seed_cnn: units of the dense layer")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the output layer")


class ImagePipelineConfig(PipelineBase):
    pipeline: Literal["image_cnn"] = Field(description="which pipeline this config drives")
    data: ImageDataConfig = Field(default_factory=ImageDataConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    preprocess: ImagePreprocessConfig = Field(default_factory=ImagePreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: ImageTrainConfig = Field(default_factory=ImageTrainConfig)

    @model_validator(mode="after")
    def _backbone_settings(self) -> ImagePipelineConfig:
        if not isinstance(self.model, ModelConfig):  # a kind built on this one, with its own model
            return self
        freeze = getattr(self.train, "freeze_backbone_epochs", 0)
        if self.model.backbone == "seed_cnn":
            if self.model.weights != "none":
                raise ValueError(
                    "model.weights needs a model.backbone other than seed_cnn (train.init_from starts "
                    "from a whole earlier model)"
                )
            if freeze:
                raise ValueError("train.freeze_backbone_epochs needs a model.backbone other than seed_cnn")
        elif self.ingest.image_size < 32:
            raise ValueError(f"model.backbone={self.model.backbone} needs ingest.image_size >= 32")
        return self
