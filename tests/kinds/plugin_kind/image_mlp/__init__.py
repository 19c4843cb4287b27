"""``image_mlp``: a kind outside dlfusion's repository (tests/kinds/plugin_kind), registered through the
``dlfusion.kinds`` entry point of its own package. A multi-layer perceptron on the image kinds'
data: their ingest, preprocess, demo and scoring parts; its own config, model and served pyfunc;
dlfusion's shared classifier evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.core.config import Section
from pipelines.kinds import Kind
from pipelines.kinds.image_cnn.config import ImagePipelineConfig


class MlpModelConfig(Section):
    hidden_units: int = Field(64, ge=1, description="units of the hidden layer")


class MlpConfig(ImagePipelineConfig):
    pipeline: Literal["image_mlp"] = Field(description="which pipeline this config drives")
    model: MlpModelConfig = Field(default_factory=MlpModelConfig)


KIND = Kind(
    name="image_mlp",
    config=MlpConfig,
    ingest="pipelines.kinds.image_cnn.ingest:run",
    preprocess="pipelines.kinds.image_cnn.preprocess:run",
    demo="pipelines.kinds.image_cnn.demo:digits_demo",
    task="image_mlp.model:MlpTask",
    served_model="image_mlp.model:served_model",
    evaluate="pipelines.kinds.classifier.evaluation:evaluate",
    primary_metric="test_accuracy",
    score_input="pipelines.kinds.image_cnn.scoring:score_input",
)
