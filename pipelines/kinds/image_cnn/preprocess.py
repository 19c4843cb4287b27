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
from pipelines.kinds.image_cnn.ingest import ingest_layout
from pipelines.kinds.image_cnn.schemas import IMAGE_RECORDS, IMAGE_SPLIT
from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.preprocess.profile import checked_profile, data_profile, record_profile
from pipelines.preprocess.splits import (
    assign_split,
    kept_transform,
    publish_snapshot,
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


def publish_ingested_splits(catalog: Catalog) -> None:
    """Make ingest's split folders (``Catalog.ingested_split``) the splits, without reading them:
    ingest wrote them with the split, row groups and codec preprocess would write
    (``spark_writes.publish_files``: hard links on a local file system)."""
    spark_writes.publish_files(
        {name: parquet.data_files(catalog.ingested_split(name)) for name in SPLITS},
        {name: catalog.split(name) for name in SPLITS},
        to_arrow_schema(IMAGE_RECORDS),
    )


def written_as_splits(ingest_report: dict, config: PreprocessConfig) -> bool:
    """Whether ingest wrote its records as these settings' splits (``ingest.ingest_layout``)."""
    return ingest_report.get("layout") == ingest_layout(config, config.compression)


def write_image_splits(
    spark: SparkSession, catalog: Catalog, config: PreprocessConfig, row_bytes: int
) -> None:
    """Write every split of the ingested images (``IMAGE_SPLIT``) in one Spark job: for settings
    other than those ingest split its records with (``written_as_splits``).

    One task per ingested file reads it in batches of about ``BATCH_BYTES``, decides each row's split
    (``split_names``) and writes the rows to its split's folder itself, in row groups of about
    ``rows_per_row_group`` rows: no pixel crosses into the JVM. Rows keep the order ingest wrote,
    which already mixes the classes.
    """
    files = parquet.data_files(catalog.ingested)
    schema = to_arrow_schema(IMAGE_SPLIT)
    rows_per_batch = max(1, BATCH_BYTES // row_bytes)
    split = config.split

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pyarrow.parquet as pq

        fs, path, _ = filesystems.filesystem(files[task])
        with fs.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(rows_per_batch, columns=schema.names):
                names = split_names(batch.column("relpath").to_pylist(), split)
                rows = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
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

    Spark jobs over the small columns only (split and label counts, digests, the train split's
    channel sums computed at ingest, the profile); the splits are ingest's own files, which ingest
    wrote split (``publish_ingested_splits``): no pixel is read. With a split or storage other than
    ingest's, one more job writes every split (``write_image_splits``), the pixels read once, and
    only by Python workers.
    """
    catalog = Catalog.for_workdir(config.workdir)
    size = config.ingest.image_size
    ingested = read_ingested(spark, catalog)
    ingest_report = atomic.read_json(catalog.ingest_report)
    ingested_size = ingest_report.get("image_size", size)
    written = sum(parquet.row_group_sizes(catalog.ingested))
    if written != ingest_report["rows_written"]:
        raise DataError(
            str(catalog.ingested),
            f"holds {written} rows, its ingest wrote {ingest_report['rows_written']}: re-run ingest",
        )
    if ingested_size != size:
        raise DataError(
            str(catalog.ingested),
            f"holds {ingested_size} px images, ingest.image_size is {size}: re-run ingest",
        )
    size_batches(spark, size * size * 3 + 64)
    images = assign_split(ingested, config.preprocess.split)
    with spark_stage(spark, "preprocess", total=written, unit="images") as stage:
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
        kept = kept_transform(
            catalog, ingest_report, config.preprocess.refit, class_names, profile, config.validation.max_drift
        )
        transform = kept or ImageTransform(size, class_names, mean, std)
        if kept:
            log.info("preprocess: the transform fitted before is kept (preprocess.refit=true fits it again)")
        if written_as_splits(ingest_report, config.preprocess):
            stage.phase = "publishing splits"
            publish_ingested_splits(catalog)
        else:
            stage.phase = "writing splits"
            log.info("preprocess: the split or its storage differs from ingest's: writing every split")
            write_image_splits(spark, catalog, config.preprocess, size * size * 3 + 64)
        report = record_splits(
            transform,
            catalog,
            split_summaries(rows, class_names),
            transform_kept=kept is not None,
            snapshot=publish_snapshot(catalog, ingest_report),
        )
        record_profile(catalog, profile)
    return {**report, "profile": profile, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}


def _source_shape(images: DataFrame) -> Column:
    """The profile's shape of an image (``ingest.source_shape``; data ingested before it was
    recorded: "unknown")."""
    return F.col("source_shape") if "source_shape" in images.columns else F.lit(None).cast("string")
