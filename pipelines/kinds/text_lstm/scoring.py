"""Scoring input of the sentiment classifier: text files in the configured format, parsed as ingest
parses them; a label column is not needed. The served model tokenizes the raw text itself."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from pipelines.core.errors import DataError
from pipelines.io import spark_writes
from pipelines.kinds.text_lstm.config import TextPipelineConfig
from pipelines.kinds.text_lstm.ingest import read_records, text_reason
from pipelines.kinds.text_lstm.preprocess import text_shape
from pipelines.kinds.text_lstm.transform import TextTransform
from pipelines.score.scoring import PREDICTIONS, BatchScorer, ScoreInputs


def score_input(
    config: TextPipelineConfig,
    spark: SparkSession,
    source: str,
    transform: TextTransform,
    locations: dict[str, str],
    score: BatchScorer,
) -> ScoreInputs:
    """Parse every record under ``source`` and score the usable ones in the tasks that parsed them:
    predictions to ``locations["predictions"]``; malformed records and empty texts to
    ``locations["quarantined"]`` with the reason and the raw record."""
    if not spark_writes.exists(spark, source):
        raise DataError(source, "data.source does not exist")
    records = read_records(spark, config.data, source, labelled=False).select(
        F.sha2(F.col("text"), 256).alias("key"), "path", "text", "record", text_reason().alias("reason")
    )
    # Two jobs, each parsing the text again (cheap next to the model): the two outputs differ in columns.
    usable = records.filter(F.col("reason").isNull()).select(
        "key", "path", "text", text_shape(F.col("text")).alias("input_shape")
    )
    spark_writes.write_parquet_atomically(
        usable.mapInArrow(score.batches, from_arrow_schema(PREDICTIONS)), locations["predictions"]
    )
    spark_writes.write_parquet_atomically(
        records.filter(F.col("reason").isNotNull()), locations["quarantined"]
    )
    return ScoreInputs(seen=None)
