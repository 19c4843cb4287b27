"""A DCGAN on the image classifier's data: same ingest and preprocess, its own model and run."""

from pipelines.kinds import Kind
from pipelines.kinds.image_gan.config import GanPipelineConfig

KIND = Kind(
    name="image_gan",
    config=GanPipelineConfig,
    ingest="pipelines.kinds.image_cnn.ingest:run",
    preprocess="pipelines.kinds.image_cnn.preprocess:run",
    demo="pipelines.kinds.image_cnn.demo:digits_demo",
    task="pipelines.kinds.image_gan.training:GanTask",
    served_model="pipelines.kinds.image_gan.serving:served_model",
    evaluate="pipelines.kinds.image_gan.serving:evaluate",
    primary_metric="test_frechet_distance",
    higher_is_better=False,
    learns_classes=False,
)
