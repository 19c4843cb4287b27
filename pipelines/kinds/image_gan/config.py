"""The GAN's configuration: the image classifier's data keys, the two networks and the monitoring."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import Section, TrainConfig
from pipelines.kinds.image_cnn.config import ImagePipelineConfig


class GanModelConfig(Section):
    latent_dim: int = Field(64, ge=2, description="size of the generator's latent vector")
    generator_filters: list[int] = Field(
        [64, 32],
        min_length=1,
        description="filters per generator block; the image doubles once per entry",
    )
    discriminator_filters: list[int] = Field(
        [32, 64, 128], min_length=1, description="filters of each strided conv"
    )
    dropout: float = Field(0.3, ge=0, lt=1, description="discriminator dropout")
    beta_1: float = Field(0.5, gt=0, lt=1, description="Adam beta_1 of both optimizers")


class GanMonitorConfig(Section):
    sample_every: int = Field(
        1, ge=1, description="log a grid of samples every this many epochs (and the last)"
    )
    grid: int = Field(
        8, ge=1, le=16, description="the sample grid is grid x grid images from a fixed latent batch"
    )
    quality_samples: int = Field(
        1000, ge=16, description="real and generated images compared for the Fréchet distance"
    )
    feature_epochs: int = Field(
        3, ge=1, description="epochs of the small classifier that defines the feature space"
    )


class GanTrainConfig(TrainConfig):
    precision: Literal["float32", "mixed_bfloat16"] = Field(
        "float32",
        description="compute dtype on the ranks (variables stay float32); not mixed_float16: the two "
        "networks' training step does not scale its losses",
    )


class GanPipelineConfig(ImagePipelineConfig):
    pipeline: Literal["image_gan"] = Field(description="which pipeline this config drives")
    model: GanModelConfig = Field(default_factory=GanModelConfig)
    monitor: GanMonitorConfig = Field(default_factory=GanMonitorConfig)
    train: GanTrainConfig = Field(
        default_factory=GanTrainConfig
    )  # no train.augment: the GAN does not augment

    @model_validator(mode="after")
    def _image_fits_the_generator(self) -> GanPipelineConfig:
        doublings = len(self.model.generator_filters)
        if self.ingest.image_size % 2**doublings:
            raise ValueError(
                f"ingest.image_size {self.ingest.image_size} must be divisible by 2**{doublings} "
                f"(the generator doubles the image once per model.generator_filters entry)"
            )
        return self
