"""Preprocess stage: ingested images -> train/val/test Parquet for streaming + the fitted transform."""

from __future__ import annotations

import logging

import numpy as np
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipelines import schemas, storage
from pipelines.catalog import SPLITS, Catalog
from pipelines.config import ImagePipelineConfig, PreprocessConfig, SplitConfig
from pipelines.errors import DataError
from pipelines.progress import spark_stage
from pipelines.spark import size_batches
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


def channel_stats(sums: np.ndarray, squares: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std from per-channel sums and sums of squares over ``pixels`` pixels."""
    if pixels == 0:
        raise DataError("train split", "is empty: no statistics can be fitted")
    mean = np.asarray(sums, np.float64) / pixels
    var = np.asarray(squares, np.float64) / pixels - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()


def summarize_splits(df: DataFrame, identity: list[str], sums: dict[str, Column] | None = None) -> list[Row]:
    """One small row per (split, label): ``rows``, ``digest`` (XOR of 64-bit hashes of the ``identity``
    columns: order-independent) and each of ``sums``. Reads only the columns these need.
    """
    aggregates = [F.count(F.lit(1)).alias("rows"), F.bit_xor(F.xxhash64(*identity)).alias("digest")]
    aggregates += [F.sum(column).alias(name) for name, column in (sums or {}).items()]
    return df.groupBy("split", "label").agg(*aggregates).collect()


def split_summaries(rows: list[Row], class_names: list[str]) -> dict[str, dict]:
    """Per split: rows, label counts in class order and the content digest, from ``summarize_splits``."""
    summaries = {}
    for name in SPLITS:
        mine = [row for row in rows if row["split"] == name]
        counts = {row["label"]: row["rows"] for row in mine}
        digest = 0
        for row in mine:
            digest ^= row["digest"] or 0
        summaries[name] = {
            "rows": sum(counts.values()),
            "label_counts": [counts.get(label, 0) for label in class_names],
            "digest": f"{digest & 0xFFFFFFFFFFFFFFFF:016x}",
        }
    return summaries


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
    summaries: dict[str, dict],
    mix_rows: bool = True,
) -> dict:
    """Write every split of ``indexed`` (with ``split`` and int ``label`` columns) in one Spark job,
    then the fitted transform and the report (rows, row groups, label counts, digest per split).

    Row groups are sized in bytes (``row_bytes`` per row) to hold about ``rows_per_row_group`` rows.
    ``mix_rows=False`` is for input whose order is already mixed (image ingest mixes the classes).
    Rows and row groups come from the written footers and must match ``summaries`` (computed before,
    from the same input): a row lost or duplicated fails the stage.
    """
    block_size = str(max(64 * 1024, config.rows_per_row_group * row_bytes))
    rows = schemas.conform(indexed, schema, keep=("split",))
    if mix_rows:
        # Rows are written in the order a task reads them; input sorted by label (a dated export)
        # would give single-class row groups. A sort by a hash of the key within each task (no
        # shuffle; it spills, so memory stays bounded) mixes them, split by split.
        rows = rows.sortWithinPartitions("split", F.xxhash64(schema.fieldNames()[0]))
    storage.write_partitions_atomically(
        rows,
        "split",
        {name: catalog.split(name) for name in SPLITS},
        compression=config.compression,
        **{"parquet.block.size": block_size, "parquet.block.size.row.check.min": "10"},
    )
    report: dict = {"class_names": transform.class_names, "splits": {}}
    for name in SPLITS:
        location = catalog.split(name)
        groups = storage.row_group_sizes(location)
        if sum(groups) != summaries[name]["rows"]:
            raise DataError(
                str(location), f"has {sum(groups)} rows, {summaries[name]['rows']} were to be written"
            )
        report["splits"][name] = {**summaries[name], "row_groups": len(groups), "path": str(location)}
    save_transform(transform, catalog.transform)
    storage.write_json_atomically(report, catalog.preprocess_report)
    log.info(
        "preprocess: %s",
        ", ".join(f"{k}={v['rows']} rows/{v['row_groups']} row groups" for k, v in report["splits"].items()),
    )
    return report


def run(config: ImagePipelineConfig, spark: SparkSession) -> dict:
    """Split the ingested images, fit the transform on train, write one Parquet data set per split.

    Two Spark jobs: one over the small columns (split and label counts, digests, the train split's
    channel sums computed at ingest), one that writes every split; the pixels are read once.
    """
    catalog = Catalog.for_workdir(config.workdir)
    size = config.ingest.image_size
    ingested = read_ingested(spark, catalog)
    ingested_size = storage.read_json(catalog.ingest_report).get("image_size", size)
    if ingested_size != size:
        raise DataError(
            str(catalog.ingested),
            f"holds {ingested_size} px images, ingest.image_size is {size}: re-run ingest",
        )
    size_batches(spark, size * size * 3 + 64)
    images = assign_split(ingested, config.preprocess.split)
    total = sum(storage.row_group_sizes(catalog.ingested))
    with spark_stage(spark, "preprocess", total=total, unit="images") as stage:
        stage.phase = "statistics"
        sums = {f"s{c}": F.col("channel_sum")[c] for c in range(3)}
        sums.update({f"q{c}": F.col("channel_sq_sum")[c] for c in range(3)})
        rows = summarize_splits(images, ["relpath", "label", "pixels_hash"], sums)
        class_names = sorted({row["label"] for row in rows})
        train = [row for row in rows if row["split"] == "train"]
        mean, std = channel_stats(
            np.array([sum(row[f"s{c}"] for row in train) for c in range(3)]),
            np.array([sum(row[f"q{c}"] for row in train) for c in range(3)]),
            sum(row["rows"] for row in train) * size * size,
        )
        transform = ImageTransform(size, class_names, mean, std)
        stage.phase = "writing splits"
        report = write_splits(
            index_labels(images, class_names),
            schemas.IMAGE_SPLIT,
            transform,
            config.preprocess,
            catalog,
            size * size * 3 + 64,
            split_summaries(rows, class_names),
            mix_rows=False,  # ingest wrote the images in an order that mixes the classes
        )
    return {**report, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}
