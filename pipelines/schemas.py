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

# Preprocess output, one data set per split, streamed by Petastorm to the Horovod ranks.
IMAGE_SPLIT = StructType(
    [
        StructField("relpath", StringType(), False),
        StructField("label", IntegerType(), False),
        StructField("pixels", BinaryType(), False),
    ]
)


def conform(df, schema: StructType):
    """Select and cast ``df``'s columns to ``schema`` (in its order), so what is written is declared."""
    from pyspark.sql import functions as F

    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
