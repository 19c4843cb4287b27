"""The image kinds' declared Parquet schemas: writers select these columns
(``schemas.conform``), tests check them."""

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

# Ingest output: one row per file seen. A decoded image has pixels (H*W*3 uint8 bytes, row-major RGB),
# its per-channel sums and sums of squares (so preprocess fits statistics without reading pixels) and
# a hash of the pixels (so split digests and the profile's duplicates need no pixels either), and
# the file's own shape for the profile (the band of its longest side and its Pillow mode, "64-127 px
# RGB"); a file that cannot be used has a ``reason`` instead. Usable rows and quarantined rows are
# written to two folders in one pass.
IMAGE_RECORDS = StructType(
    [
        StructField("path", StringType(), False),
        StructField("relpath", StringType(), False),
        StructField("label", StringType(), True),
        StructField("pixels", BinaryType(), True),
        StructField("channel_sum", ArrayType(DoubleType(), True), True),
        StructField("channel_sq_sum", ArrayType(DoubleType(), True), True),
        StructField("pixels_hash", LongType(), True),
        StructField("source_shape", StringType(), True),
        StructField("reason", StringType(), True),
    ]
)

# Preprocess output, one data set per split, streamed by Petastorm to the Horovod ranks: at least
# these columns. The label is the class name, indexed by the transform's class names where it is read
# (``transforms.class_indices``), so that a split can be ingest's own files (``IMAGE_RECORDS``, split
# by ingest) published without a rewrite.
IMAGE_SPLIT = StructType(
    [
        StructField("relpath", StringType(), False),
        StructField("label", StringType(), False),
        StructField("pixels", BinaryType(), False),
    ]
)
