"""Scoring input of the image classifier: any folder of JPEG/PNG files (class folders not needed),
listed, read and decoded as ingest does, at the size the model was trained on."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import SparkSession

from pipelines.io import spark_writes
from pipelines.io.filesystems import source_uri
from pipelines.kinds.image_cnn.config import ImagePipelineConfig
from pipelines.kinds.image_cnn.ingest import decoding_tasks, list_images
from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.score.scoring import ScoreInputs

# Pixels as signed bytes: Spark has no unsigned type, and the served model reads them back as uint8.
SCORE_INPUT = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("pixels", pa.list_(pa.int8())),
        ("reason", pa.string()),
    ]
)


def score_rows(records: pa.RecordBatch) -> pa.RecordBatch:
    """``IMAGE_RECORDS`` -> ``SCORE_INPUT``: the relative path is the key, pixels as a list column."""
    pixels = records.column("pixels")
    if pixels.offset:  # a slice: copy it so that its offsets start at 0
        pixels = pa.concat_arrays([pixels])
    _, offsets, data = pixels.buffers()  # every image's bytes back to back, and where each starts
    offsets = pa.Array.from_buffers(pa.int32(), len(pixels) + 1, [None, offsets])
    values = pa.Array.from_buffers(pa.int8(), data.size if data else 0, [None, data])
    as_lists = pa.ListArray.from_arrays(offsets, values, mask=pixels.is_null())
    columns = [records.column("relpath"), records.column("path"), as_lists, records.column("reason")]
    return pa.RecordBatch.from_arrays(columns, schema=SCORE_INPUT)


def score_input(
    config: ImagePipelineConfig,
    spark: SparkSession,
    source: str,
    transform: ImageTransform,
    locations: dict[str, str],
) -> ScoreInputs:
    """Decode every visible file under ``source``: model input to ``locations["inputs"]``, files
    that cannot be used to ``locations["quarantined"]`` with the reason."""
    settings = config.ingest
    listing, listing_uri, tasks = list_images(spark, source, settings, locations["listing"])
    spark_writes.write_from_tasks(
        spark,
        tasks,
        decoding_tasks(
            listing_uri,
            source_uri(source),
            transform.image_size,
            settings.batch_bytes,
            labelled=False,
            rows=score_rows,
        ),
        SCORE_INPUT,
        {"usable": locations["inputs"], "unusable": locations["quarantined"]},
        settings.row_group_bytes,
        settings.compression,
    )
    return ScoreInputs(seen=listing.num_rows, columns=("pixels",))
