"""Preprocess stage: ingested images -> train/val/test Parquet for streaming + the fitted transform."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from pipelines import schemas, storage
from pipelines.catalog import SPLITS, Catalog
from pipelines.config import ImagePipelineConfig, PreprocessConfig, SplitConfig
from pipelines.errors import DataError
from pipelines.progress import spark_stage
from pipelines.spark import BATCH_BYTES, size_batches
from pipelines.transforms import ImageTransform, Transform, save_transform

log = logging.getLogger(__name__)

_HASH_BUCKETS = 10_000


def _split_of(key: Column, split: SplitConfig) -> Column:
    """A stable split name from a hash of ``key``: the same file always lands in the same split.

    CRC-32, so that Python computes the same split (``split_names``) where Spark is not involved."""
    bucket = F.pmod(F.crc32(key), F.lit(_HASH_BUCKETS)) / _HASH_BUCKETS
    return (
        F.when(bucket < split.train, "train").when(bucket < split.train + split.val, "val").otherwise("test")
    )


def split_names(keys: list[str], split: SplitConfig) -> np.ndarray:
    """``_split_of`` computed in Python: the split name of each key."""
    buckets = np.array([zlib.crc32(key.encode()) % _HASH_BUCKETS for key in keys]) / _HASH_BUCKETS
    rest = np.where(buckets < split.train + split.val, "val", "test")
    return np.where(buckets < split.train, "train", rest)


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
    return record_splits(transform, catalog, summaries)


def write_image_splits(
    spark: SparkSession, catalog: Catalog, class_names: list[str], config: PreprocessConfig, row_bytes: int
) -> None:
    """Write every split of the ingested images (``IMAGE_SPLIT``) in one Spark job.

    One task per ingested file reads it in batches of about ``BATCH_BYTES``, decides each row's split
    (``split_names``), turns its label into its index in ``class_names`` and writes the rows to its
    split's folder itself, in row groups of about ``rows_per_row_group`` rows: no pixel crosses into
    the JVM. Rows keep the order ingest wrote, which already mixes the classes.
    """
    files = storage.data_files(catalog.ingested)
    schema = to_arrow_schema(schemas.IMAGE_SPLIT)
    rows_per_batch = max(1, BATCH_BYTES // row_bytes)
    split = config.split

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        classes = pa.array(class_names, pa.string())
        fs, path, _ = storage.filesystem(files[task])
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

    storage.write_from_tasks(
        spark,
        len(files),
        produce,
        schema,
        {name: catalog.split(name) for name in SPLITS},
        row_group_bytes=config.rows_per_row_group * row_bytes,
        compression=config.compression,
        plain_columns=("pixels",),
    )


def record_splits(transform: Transform, catalog: Catalog, summaries: dict[str, dict]) -> dict:
    """Check the written splits' rows (from the footers) against ``summaries``; save the transform and
    the report (rows, row groups, label counts, digest per split).

    Raises DataError when a row was lost or duplicated.
    """
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
    channel sums computed at ingest), one that writes every split (``write_image_splits``); the
    pixels are read once, and only by Python workers.
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
        write_image_splits(spark, catalog, class_names, config.preprocess, size * size * 3 + 64)
        report = record_splits(transform, catalog, split_summaries(rows, class_names))
    return {**report, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}
