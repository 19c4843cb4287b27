"""I/O helpers at the edges: atomic writes through Hadoop's FileSystem (any Hadoop path) or locally."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession


def _hadoop_path(spark: SparkSession, location: str | Path):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(str(location))
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def write_parquet_atomically(df: DataFrame, location: str | Path, **options: str) -> None:
    """Write ``df`` as Parquet to a temporary sibling, then rename it into place.

    A job that dies mid-write leaves only a ``.tmp-*`` folder, never half a data set at ``location``.
    """
    spark = df.sparkSession
    target, fs = _hadoop_path(spark, location)
    staging = f"{location}.tmp-{uuid.uuid4().hex[:8]}"
    df.write.options(**options).mode("overwrite").parquet(staging)
    staged, _ = _hadoop_path(spark, staging)
    if fs.exists(target):
        fs.delete(target, True)
    if not fs.rename(staged, target):
        raise OSError(f"could not move {staging} to {location}")


def exists(spark: SparkSession, location: str | Path) -> bool:
    path, fs = _hadoop_path(spark, location)
    return bool(fs.exists(path))


def qualified_uri(spark: SparkSession, location: str | Path) -> str:
    """The fully qualified URI Hadoop gives ``location`` (the form Spark's file readers report)."""
    path, fs = _hadoop_path(spark, location)
    return fs.makeQualified(path).toString()


def list_files(spark: SparkSession, root: str | Path) -> list[tuple[str, int]]:
    """Every regular file under ``root`` (recursively) as (URI, size), hidden ones included."""
    path, fs = _hadoop_path(spark, root)
    if not fs.exists(path):
        raise FileNotFoundError(str(root))
    found = []
    files = fs.listFiles(path, True)
    while files.hasNext():
        status = files.next()
        found.append((status.getPath().toString(), int(status.getLen())))
    return found


def row_group_sizes(location: str | Path) -> list[int]:
    """Rows in each Parquet row group of a data set, in the sorted file order Petastorm shards by."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    text = str(location)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(text.removeprefix("file:")).resolve())
    dataset = ds.dataset(root, filesystem=fs, format="parquet", exclude_invalid_files=True)
    fragments = sorted(dataset.get_fragments(), key=lambda fragment: fragment.path)
    return [group.num_rows for fragment in fragments for group in fragment.row_groups]


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    """Write JSON to a local file so that readers see the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
