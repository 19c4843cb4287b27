"""Preprocess stage: ingested images -> train/val/test Parquet for streaming + the fitted transform."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import PreprocessConfig
from pipelines.core.errors import DataError
from pipelines.io import atomic, filesystems, parquet, spark_writes
from pipelines.kinds import kind_of
from pipelines.kinds.image_cnn.config import ImagePipelineConfig
from pipelines.kinds.image_cnn.schemas import IMAGE_SPLIT
from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.preprocess.profile import checked_profile, data_profile, record_profile
from pipelines.preprocess.splits import (
    assign_split,
    read_ingested,
    record_splits,
    split_names,
    split_summaries,
    summarize_splits,
)
from pipelines.runtime.progress import spark_stage
from pipelines.runtime.spark import BATCH_BYTES, size_batches

log = logging.getLogger(__name__)


def channel_stats(sums: np.ndarray, squares: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std from per-channel sums and sums of squares over ``pixels`` pixels."""
    if pixels == 0:
        raise DataError("train split", "is empty: no statistics can be fitted")
    mean = np.asarray(sums, np.float64) / pixels
    var = np.asarray(squares, np.float64) / pixels - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()


def write_image_splits(
    spark: SparkSession, catalog: Catalog, class_names: list[str], config: PreprocessConfig, row_bytes: int
) -> None:
    """Write every split of the ingested images (``IMAGE_SPLIT``) in one Spark job.

    One task per ingested file reads it in batches of about ``BATCH_BYTES``, decides each row's split
    (``split_names``), turns its label into its index in ``class_names`` and writes the rows to its
    split's folder itself, in row groups of about ``rows_per_row_group`` rows: no pixel crosses into
    the JVM. Rows keep the order ingest wrote, which already mixes the classes.
    """
    files = parquet.data_files(catalog.ingested)
    schema = to_arrow_schema(IMAGE_SPLIT)
    rows_per_batch = max(1, BATCH_BYTES // row_bytes)
    split = config.split

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        classes = pa.array(class_names, pa.string())
        fs, path, _ = filesystems.filesystem(files[task])
        with fs.open_input_file(path) as handle:
            columns = ["relpath", "label", "pixels"]
            for batch in pq.ParquetFile(handle).iter_batches(rows_per_batch, columns=columns):
                names = split_names(batch.column("relpath").to_pylist(), split)
                labels = pc.index_in(batch.column("label"), value_set=classes).cast(pa.int32())
                rows = pa.RecordBatch.from_arrays(
                    [batch.column("relpath"), labels, batch.column("pixels")], schema=schema
                )
                for name in SPLITS:
                    yield name, rows.filter(pa.array(names == name))

    spark_writes.write_from_tasks(
        spark,
        len(files),
        produce,
        schema,
        {name: catalog.split(name) for name in SPLITS},
        row_group_bytes=config.rows_per_row_group * row_bytes,
        compression=config.compression,
        plain_columns=("pixels",),
    )


def run(config: ImagePipelineConfig, spark: SparkSession) -> dict:
    """Split the ingested images, fit the transform on train, write one Parquet data set per split.

    Two Spark jobs: one over the small columns (split and label counts, digests, the train split's
    channel sums computed at ingest), one that writes every split (``write_image_splits``); the
    pixels are read once, and only by Python workers.
    """
    catalog = Catalog.for_workdir(config.workdir)
    size = config.ingest.image_size
    ingested = read_ingested(spark, catalog)
    ingested_size = atomic.read_json(catalog.ingest_report).get("image_size", size)
    if ingested_size != size:
        raise DataError(
            str(catalog.ingested),
            f"holds {ingested_size} px images, ingest.image_size is {size}: re-run ingest",
        )
    size_batches(spark, size * size * 3 + 64)
    images = assign_split(ingested, config.preprocess.split)
    total = sum(parquet.row_group_sizes(catalog.ingested))
    with spark_stage(spark, "preprocess", total=total, unit="images") as stage:
        stage.phase = "statistics"
        sums = {f"s{c}": F.col("channel_sum")[c] for c in range(3)}
        sums.update({f"q{c}": F.col("channel_sq_sum")[c] for c in range(3)})
        rows = summarize_splits(images, ["relpath", "label", "pixels_hash"], sums)
        class_names = sorted({row["label"] for row in rows})
        stage.phase = "profile"
        profile = checked_profile(
            catalog,
            data_profile(images, F.col("pixels_hash"), _source_shape(images), rows, class_names),
            config.validation,
            kind_of(config).learns_classes,
        )
        train = [row for row in rows if row["split"] == "train"]
        mean, std = channel_stats(
            np.array([sum(row[f"s{c}"] for row in train) for c in range(3)]),
            np.array([sum(row[f"q{c}"] for row in train) for c in range(3)]),
            sum(row["rows"] for row in train) * size * size,
        )
        transform = ImageTransform(size, class_names, mean, std)
        stage.phase = "writing splits"
        write_image_splits(spark, catalog, class_names, config.preprocess, size * size * 3 + 64)
        report = record_splits(transform, catalog, split_summaries(rows, class_names))
        record_profile(catalog, profile)
    return {**report, "profile": profile, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}


def _source_shape(images: DataFrame) -> Column:
    """The profile's shape of an image (``ingest.source_shape``; data ingested before it was
    recorded: "unknown")."""
    return F.col("source_shape") if "source_shape" in images.columns else F.lit(None).cast("string")
