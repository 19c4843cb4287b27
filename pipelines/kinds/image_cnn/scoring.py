"""Scoring input of the image classifier: any folder of JPEG/PNG files (class folders not needed),
listed, read and decoded as ingest does, at the size the model was trained on, and scored in the
task that decoded them."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import SparkSession

from pipelines.io import spark_writes
from pipelines.io.filesystems import source_uri
from pipelines.kinds.image_cnn.config import ImagePipelineConfig
from pipelines.kinds.image_cnn.ingest import decoding_tasks, list_images
from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.score.scoring import PREDICTIONS, BatchScorer, ScoreInputs

# A file that cannot be scored: where it is and why (its pixels, if any, are not kept).
UNSCORED = pa.schema([("key", pa.string()), ("path", pa.string()), ("reason", pa.string())])


def score_rows(records: pa.RecordBatch) -> pa.RecordBatch:
    """``IMAGE_RECORDS`` -> the relative path as ``key``, ``path``, ``pixels``, ``reason`` and the
    file's ``input_shape`` (as the data profile counts it)."""
    columns = [records.column(name) for name in ("relpath", "path", "pixels", "reason", "source_shape")]
    return pa.RecordBatch.from_arrays(columns, names=["key", "path", "pixels", "reason", "input_shape"])


def score_input(
    config: ImagePipelineConfig,
    spark: SparkSession,
    source: str,
    transform: ImageTransform,
    locations: dict[str, str],
    score: BatchScorer,
) -> ScoreInputs:
    """Decode every visible file under ``source`` and score it in the same task: predictions to
    ``locations["predictions"]``, files that cannot be used to ``locations["quarantined"]`` with the
    reason."""
    settings = config.ingest
    listing, listing_uri, tasks = list_images(spark, source, settings, locations["listing"])
    decode = decoding_tasks(
        listing_uri,
        source_uri(source),
        transform.image_size,
        settings.batch_bytes,
        labelled=False,
        rows=score_rows,
    )

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        for value, batch in decode(task):
            if value == "usable":
                yield value, score(batch)
            else:
                yield value, batch.select(UNSCORED.names)

    spark_writes.write_from_tasks(
        spark,
        tasks,
        produce,
        {"usable": PREDICTIONS, "unusable": UNSCORED},
        {"usable": locations["predictions"], "unusable": locations["quarantined"]},
        settings.row_group_bytes,
    )
    return ScoreInputs(seen=listing.num_rows)
