"""The text kind's declared Parquet schemas: writers select these columns
(``schemas.conform``), tests check them."""

from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    StringType,
    StructField,
    StructType,
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
