"""Writes from Spark tasks: what lands where, row groups by bytes, and only successful attempts kept."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.io import parquet, spark_writes

SCHEMA = pa.schema([("key", pa.string()), ("payload", pa.binary())])


def _batches():
    """A batch maker for Spark tasks (a closure: the workers cannot import this test module)."""
    schema = SCHEMA

    def batch(task: int, rows: int) -> pa.RecordBatch:
        keys = [f"t{task}-{i}" for i in range(rows)]
        return pa.RecordBatch.from_arrays([pa.array(keys), pa.array([b"x" * 1000] * rows)], schema=schema)

    return batch


def test_tasks_write_each_value_to_its_location_in_row_groups_cut_by_bytes(spark, tmp_path):
    batch = _batches()

    def produce(task):
        for _ in range(3):
            yield ("even" if task % 2 == 0 else "odd"), batch(task, 50)

    locations = {value: tmp_path / f"{value}.parquet" for value in ("even", "odd", "none")}
    files = spark_writes.write_from_tasks(spark, 4, produce, SCHEMA, locations, row_group_bytes=40_000)

    assert sorted((value, rows) for value, _, rows in files) == [("even", 150)] * 2 + [("odd", 150)] * 2
    assert sum(parquet.row_group_sizes(locations["even"])) == 300
    assert max(parquet.row_group_sizes(locations["odd"])) <= 40  # 1,000-byte rows, 40 kB groups
    assert sum(parquet.row_group_sizes(locations["none"])) == 0  # an empty data set, with the schema
    assert spark.read.parquet(str(locations["none"])).columns == ["key", "payload"]
    keys = {row.key for row in spark.read.parquet(str(locations["odd"])).collect()}
    assert keys == {f"t{task}-{i}" for task in (1, 3) for i in range(50)}
    assert not list(tmp_path.glob(".tmp-*"))  # staging removed


def test_a_value_without_location_fails_the_write(spark, tmp_path):
    batch = _batches()

    def produce(task):
        yield "elsewhere", batch(task, 1)

    with pytest.raises(Exception, match="elsewhere"):
        spark_writes.write_from_tasks(spark, 1, produce, SCHEMA, {"here": tmp_path / "here"}, 1 << 20)
    assert not (tmp_path / "here").exists()


def test_commit_keeps_only_the_files_of_successful_attempts(tmp_path):
    staging = tmp_path / ".tmp-x-out"
    (staging / "out").mkdir(parents=True)
    for name in ("part-00000-0", "part-00001-0", "part-00001-1"):  # task 1's first attempt failed
        pq.write_table(pa.Table.from_batches([_batches()(0, 2)]), staging / "out" / f"{name}.parquet")
    reported = [("out", f"file:{staging}/out/{name}.parquet", 2) for name in ("part-00000-0", "part-00001-1")]
    (tmp_path / "out.parquet").mkdir()  # an older data set is replaced
    spark_writes._commit_staged(f"file:{staging}", reported, {"out": tmp_path / "out.parquet"}, SCHEMA)
    assert sorted(p.name for p in (tmp_path / "out.parquet").iterdir()) == [
        "part-00000-0.parquet",
        "part-00001-1.parquet",
    ]
    assert not staging.exists()


def test_staging_is_a_sibling_on_the_same_file_system(tmp_path):
    remote = spark_writes._staging_uri("hdfs://namenode:8020/data/work/records.parquet")
    assert remote.startswith("hdfs://namenode:8020/data/work/.tmp-") and remote.endswith("-records.parquet")
    local = spark_writes._staging_uri(tmp_path / "out.parquet")
    assert local.startswith(f"file:{tmp_path}/.tmp-") and local.endswith("-out.parquet")
