"""The LSTM sentiment classifier on text records (CSV, TSV or JSON Lines)."""

from pipelines.kinds import Kind
from pipelines.kinds.classifier import MAJORITY_BASELINE
from pipelines.kinds.text_lstm.config import TextPipelineConfig

KIND = Kind(
    name="text_lstm",
    config=TextPipelineConfig,
    ingest="pipelines.kinds.text_lstm.ingest:run",
    preprocess="pipelines.kinds.text_lstm.preprocess:run",
    demo="pipelines.kinds.text_lstm.demo:reviews_demo",
    task="pipelines.kinds.text_lstm.task:LstmTask",
    served_model="pipelines.kinds.text_lstm.model:served_model",
    evaluate="pipelines.kinds.text_lstm.evaluation:evaluate",
    primary_metric="test_accuracy",
    baseline=MAJORITY_BASELINE,
    comparisons=(("test_macro_f1", "test_bow_macro_f1"),),
    score_input="pipelines.kinds.text_lstm.scoring:score_input",
)
