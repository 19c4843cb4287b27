"""Scoring input of the sentiment classifier: text files in the configured format, parsed as ingest
parses them; a label column is not needed. The served model tokenizes the raw text itself."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.core.errors import DataError
from pipelines.ingest.accounting import write_by_reason
from pipelines.io import spark_writes
from pipelines.kinds.text_lstm.config import TextPipelineConfig
from pipelines.kinds.text_lstm.ingest import read_records, text_reason
from pipelines.kinds.text_lstm.transform import TextTransform
from pipelines.score.scoring import ScoreInputs


def score_input(
    config: TextPipelineConfig,
    spark: SparkSession,
    source: str,
    transform: TextTransform,
    locations: dict[str, str],
) -> ScoreInputs:
    """Parse every record under ``source``: (key, path, text) to ``locations["inputs"]``; malformed
    records and empty texts to ``locations["quarantined"]`` with the reason and the raw record."""
    if not spark_writes.exists(spark, source):
        raise DataError(source, "data.source does not exist")
    records = read_records(spark, config.data, source, labelled=False).select(
        F.sha2(F.col("text"), 256).alias("key"), "path", "text", "record", text_reason().alias("reason")
    )
    write_by_reason(records, locations["inputs"], locations["quarantined"])
    return ScoreInputs(seen=None, columns=("text",))
