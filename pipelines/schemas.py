"""The declared Parquet schema of each data set; writers select these columns, tests check them."""

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

# Ingest output: one row per file seen. A decoded image has pixels (H*W*3 uint8 bytes, row-major RGB),
# its per-channel sums and sums of squares (so preprocess fits statistics without reading pixels) and
# a hash of the pixels (so split digests need no pixels either); a file that cannot be used has a
# ``reason`` instead. Usable rows and quarantined rows are written to two folders in one pass.
IMAGE_RECORDS = StructType(
    [
        StructField("path", StringType(), False),
        StructField("relpath", StringType(), False),
        StructField("label", StringType(), True),
        StructField("pixels", BinaryType(), True),
        StructField("channel_sum", ArrayType(DoubleType(), True), True),
        StructField("channel_sq_sum", ArrayType(DoubleType(), True), True),
        StructField("pixels_hash", LongType(), True),
        StructField("reason", StringType(), True),
    ]
)

# Text ingest output: one row per record the parser produced. ``key`` (a digest of the text) decides
# its split, so duplicates land in the same split and a record keeps its split when files are added.
# A record that cannot be used has a ``reason`` and, when the parser kept it, the raw ``record``.
TEXT_RECORDS = StructType(
    [
        StructField("key", StringType(), True),
        StructField("path", StringType(), False),
        StructField("text", StringType(), True),
        StructField("label", StringType(), True),
        StructField("record", StringType(), True),
        StructField("reason", StringType(), True),
    ]
)

# Preprocess output, one data set per split, streamed by Petastorm to the Horovod ranks.
IMAGE_SPLIT = StructType(
    [
        StructField("relpath", StringType(), False),
        StructField("label", IntegerType(), False),
        StructField("pixels", BinaryType(), False),
    ]
)

# Text preprocess output: ``tokens`` holds max_len int32 ids (little-endian bytes), the raw text is
# kept so that the served model (which takes raw text) can be evaluated on the same rows.
TEXT_SPLIT = StructType(
    [
        StructField("key", StringType(), False),
        StructField("text", StringType(), False),
        StructField("label", IntegerType(), False),
        StructField("tokens", BinaryType(), False),
    ]
)


def conform(df, schema: StructType, keep: tuple[str, ...] = ()):
    """Select and cast ``df``'s columns to ``schema`` (in its order), so what is written is declared;
    ``keep`` columns (e.g. the one a write is partitioned by) follow unchanged."""
    from pyspark.sql import functions as F

    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields], *keep)
