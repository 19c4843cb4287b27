"""The declared Parquet schema of each data set; writers select these columns, tests check them."""

from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType

# Ingest output: one decoded image per row, pixels as H*W*3 uint8 bytes (row-major, RGB).
IMAGES = StructType(
    [
        StructField("path", StringType(), False),
        StructField("relpath", StringType(), False),
        StructField("label", StringType(), False),
        StructField("pixels", BinaryType(), False),
    ]
)

# Everything ingest could not use, with why; nothing is dropped silently.
QUARANTINE = StructType(
    [
        StructField("path", StringType(), False),
        StructField("reason", StringType(), False),
    ]
)

# Text ingest output: one usable record per row; ``key`` (a digest of the text) decides its split,
# so duplicates land in the same split and a record keeps its split when files are added.
TEXTS = StructType(
    [
        StructField("key", StringType(), False),
        StructField("path", StringType(), False),
        StructField("text", StringType(), False),
        StructField("label", StringType(), False),
    ]
)

# Text records that could not be used: the file, the raw record as read, and why.
TEXT_QUARANTINE = StructType(
    [
        StructField("path", StringType(), False),
        StructField("record", StringType(), True),
        StructField("reason", StringType(), False),
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


def conform(df, schema: StructType):
    """Select and cast ``df``'s columns to ``schema`` (in its order), so what is written is declared."""
    from pyspark.sql import functions as F

    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
