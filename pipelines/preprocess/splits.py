"""Splits shared by every kind: a stable hash split, label indexing, per-split summaries, and the
check of the written split data sets against them with the preprocess report."""

from __future__ import annotations

import logging
import zlib

import numpy as np
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import SplitConfig
from pipelines.core.errors import DataError
from pipelines.io import atomic, parquet, spark_writes
from pipelines.io.filesystems import is_file, read_bytes
from pipelines.preprocess.transforms import Transform, load_transform, save_transform

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


def summarize_splits(df: DataFrame, identity: list[str], sums: dict[str, Column] | None = None) -> list[Row]:
    """One small row per (split, label): ``rows``, ``digest`` (XOR of 64-bit hashes of the ``identity``
    columns: order-independent) and each of ``sums``. Reads only the columns these need.
    """
    aggregates = [F.count(F.lit(1)).alias("rows"), F.bit_xor(F.xxhash64(*identity)).alias("digest")]
    aggregates += [F.sum(column).alias(name) for name, column in (sums or {}).items()]
    return df.groupBy("split", "label").agg(*aggregates).collect()


def split_summaries(rows: list[Row], class_names: list[str]) -> dict[str, dict]:
    """Per split: rows, label counts in class order and the content digest, from (split, label) rows
    with ``rows`` and ``digest`` (``summarize_splits``, or a kind's own pass)."""
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


def kept_transform(
    catalog: Catalog,
    ingest_report: dict,
    refit: bool,
    class_names: list[str],
    profile: dict,
    max_drift: float | None,
) -> Transform | None:
    """The transform fitted before, to keep after an incremental ingest (a model trained on it, and
    continued with ``train.init_from``, sees the same inputs); None: fit it anew. It is fit anew after
    a whole ingest, with ``refit``, when the classes changed, or when the drift against the last
    profile passed ``max_drift`` (``validate.max_drift``)."""
    drift = profile.get("drift") or {}
    drifted = max_drift is not None and any(value > max_drift for value in drift.values())
    whole = ingest_report.get("increment", {}).get("whole", True)
    if refit or whole or drifted or not is_file(catalog.transform):
        return None
    before = load_transform(catalog.transform)
    return before if before.class_names == class_names else None


def publish_snapshot(catalog: Catalog, ingest_report: dict) -> dict | None:
    """Copy the snapshot of the ingest whose records the splits hold (``ingest.increments``) to
    ``Catalog.published_snapshot``, for training to log; its number and files (None: no snapshot)."""
    number = ingest_report.get("increment", {}).get("number")
    if number is None or not is_file(catalog.snapshot(number)):
        return None
    atomic.write_bytes_atomically(read_bytes(str(catalog.snapshot(number))), str(catalog.published_snapshot))
    return {"number": number, "files": ingest_report["files_seen"], "path": str(catalog.published_snapshot)}


def read_ingested(spark: SparkSession, catalog: Catalog) -> DataFrame:
    if not spark_writes.exists(spark, catalog.ingested):
        raise DataError(str(catalog.ingested), "no ingested data: run the ingest stage first")
    return spark.read.parquet(str(catalog.ingested))


def record_splits(
    transform: Transform, catalog: Catalog, summaries: dict[str, dict], **facts: object
) -> dict:
    """Check the written splits' rows (from the footers) against ``summaries``; save the transform and
    the report (rows, row groups, label counts, digest per split, and ``facts``).

    Raises DataError when a row was lost or duplicated.
    """
    report: dict = {"class_names": transform.class_names, "splits": {}, **facts}
    for name in SPLITS:
        location = catalog.split(name)
        groups = parquet.row_group_sizes(location)
        if sum(groups) != summaries[name]["rows"]:
            raise DataError(
                str(location), f"has {sum(groups)} rows, {summaries[name]['rows']} were to be written"
            )
        report["splits"][name] = {**summaries[name], "row_groups": len(groups), "path": str(location)}
    save_transform(transform, catalog.transform)
    atomic.write_json_atomically(report, catalog.preprocess_report)
    log.info(
        "preprocess: %s",
        ", ".join(f"{k}={v['rows']} rows/{v['row_groups']} row groups" for k, v in report["splits"].items()),
    )
    return report
