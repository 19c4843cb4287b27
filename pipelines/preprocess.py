"""Preprocess stage: ingested images -> train/val/test Parquet for streaming + the fitted transform."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines import schemas, storage
from pipelines.catalog import SPLITS, Catalog
from pipelines.config import ImagePipelineConfig, PreprocessConfig, SplitConfig
from pipelines.errors import DataError
from pipelines.transforms import ImageTransform, Transform, save_transform

log = logging.getLogger(__name__)

_HASH_BUCKETS = 10_000


def _split_of(key: Column, split: SplitConfig) -> Column:
    """A stable split name from a hash of ``key``: the same file always lands in the same split."""
    bucket = F.pmod(F.xxhash64(key), F.lit(_HASH_BUCKETS)) / _HASH_BUCKETS
    return (
        F.when(bucket < split.train, "train").when(bucket < split.train + split.val, "val").otherwise("test")
    )


def assign_split(df: DataFrame, split: SplitConfig, key: str = "relpath") -> DataFrame:
    """Add a ``split`` column decided by a hash of ``key`` (path under the source folder)."""
    return df.withColumn("split", _split_of(F.col(key), split))


def index_labels(df: DataFrame, class_names: list[str]) -> DataFrame:
    """Replace the string ``label`` with its index in ``class_names``."""
    mapping = F.create_map(*[F.lit(x) for i, name in enumerate(class_names) for x in (name, i)])
    return df.withColumn("label", mapping[F.col("label")].cast("int"))


def fit_channel_stats(images: DataFrame, image_size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the ``pixels`` column (uint8 RGB), computed in a distributed pass."""
    pixels_per_image = image_size * image_size

    def partial_sums(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        sums, squares, count = np.zeros(3), np.zeros(3), 0
        for batch in batches:
            if batch.empty:
                continue
            flat = np.frombuffer(b"".join(batch["pixels"]), dtype=np.uint8).reshape(-1, 3)
            values = flat.astype(np.float64)
            sums += values.sum(axis=0)
            squares += (values**2).sum(axis=0)
            count += flat.shape[0]
        yield pd.DataFrame({"channel": [0, 1, 2], "s": sums, "sq": squares, "n": [count] * 3})

    parts = images.select("pixels").mapInPandas(partial_sums, "channel int, s double, sq double, n long")
    totals = parts.groupBy("channel").agg(F.sum("s"), F.sum("sq"), F.sum("n")).orderBy("channel")
    rows = totals.collect()
    count = rows[0][3] if rows else 0
    if count == 0:
        raise DataError("train split", "is empty: no statistics can be fitted")
    if count % pixels_per_image:
        raise DataError("pixels", f"lengths do not match image_size={image_size}")
    mean = np.array([row[1] for row in rows]) / count
    var = np.array([row[2] for row in rows]) / count - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()


def content_digest(df: DataFrame, columns: list[str]) -> str:
    """An order-independent digest of the rows' content (XOR of 64-bit row hashes), as hex."""
    value = df.agg(F.bit_xor(F.xxhash64(*columns)).alias("d")).first()["d"] or 0
    return f"{value & 0xFFFFFFFFFFFFFFFF:016x}"


def read_ingested(spark: SparkSession, catalog: Catalog) -> DataFrame:
    if not storage.exists(spark, catalog.ingested):
        raise DataError(str(catalog.ingested), "no ingested data: run the ingest stage first")
    return spark.read.parquet(str(catalog.ingested))


def write_splits(
    indexed: DataFrame,
    schema: StructType,
    transform: Transform,
    config: PreprocessConfig,
    catalog: Catalog,
    row_bytes: int,
) -> dict:
    """Write each split of ``indexed`` (with ``split`` and int ``label`` columns) for streaming, then
    the fitted transform and the report (rows, row groups, label counts, digest per split).

    Row groups are sized in bytes (``row_bytes`` per row) to hold about ``rows_per_row_group`` rows.
    """
    spark = indexed.sparkSession
    block_size = str(max(64 * 1024, config.rows_per_row_group * row_bytes))
    report: dict = {"class_names": transform.class_names, "splits": {}}
    key = schema.fields[0].name
    for name in SPLITS:
        rows = schemas.conform(indexed.where(F.col("split") == name), schema)
        location = catalog.split(name)
        storage.write_parquet_atomically(
            rows.repartition(config.files_per_split, key),
            location,
            **{"parquet.block.size": block_size, "parquet.block.size.row.check.min": "10"},
        )
        written = spark.read.parquet(str(location))
        counts = dict(written.groupBy("label").count().collect())
        report["splits"][name] = {
            "rows": sum(counts.values()),
            "label_counts": [counts.get(i, 0) for i in range(len(transform.class_names))],
            "row_groups": len(storage.row_group_sizes(location)),
            "digest": content_digest(written, schema.fieldNames()),
            "path": str(location),
        }
    save_transform(transform, catalog.transform)
    storage.write_json_atomically(report, catalog.preprocess_report)
    log.info(
        "preprocess: %s",
        ", ".join(f"{k}={v['rows']} rows/{v['row_groups']} row groups" for k, v in report["splits"].items()),
    )
    return report


def run(config: ImagePipelineConfig, spark: SparkSession) -> dict:
    """Split the ingested images, fit the transform on train, write one Parquet data set per split."""
    catalog = Catalog.for_workdir(config.workdir)
    images = read_ingested(spark, catalog)
    class_names = sorted(r["label"] for r in images.select("label").distinct().collect())
    split = assign_split(images, config.preprocess.split)
    size = config.ingest.image_size
    mean, std = fit_channel_stats(split.where(F.col("split") == "train"), size)
    transform = ImageTransform(size, class_names, mean, std)
    indexed = index_labels(split, class_names)
    return write_splits(
        indexed, schemas.IMAGE_SPLIT, transform, config.preprocess, catalog, size * size * 3 + 64
    )
