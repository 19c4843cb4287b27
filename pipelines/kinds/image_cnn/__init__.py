"""The CNN image classifier on a class-per-folder image tree (ImageNet layout)."""

from pipelines.kinds import Kind
from pipelines.kinds.classifier import MAJORITY_BASELINE
from pipelines.kinds.image_cnn.config import ImagePipelineConfig

KIND = Kind(
    name="image_cnn",
    config=ImagePipelineConfig,
    ingest="pipelines.kinds.image_cnn.ingest:run",
    preprocess="pipelines.kinds.image_cnn.preprocess:run",
    demo="pipelines.kinds.image_cnn.demo:digits_demo",
    task="pipelines.kinds.image_cnn.task:CnnTask",
    served_model="pipelines.kinds.image_cnn.model:served_model",
    evaluate="pipelines.kinds.classifier.evaluation:evaluate",
    primary_metric="test_accuracy",
    baseline=MAJORITY_BASELINE,
    score_input="pipelines.kinds.image_cnn.scoring:score_input",
)
