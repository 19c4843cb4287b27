"""Preprocess: stable split, statistics from train only, declared schema, atomic writes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import SplitConfig
from pipelines.core.errors import DataError
from pipelines.io import atomic, parquet, spark_writes
from pipelines.kinds.image_cnn import preprocess
from pipelines.kinds.image_cnn.preprocess import row_digests
from pipelines.kinds.image_cnn.schemas import IMAGE_SPLIT
from pipelines.preprocess import splits
from pipelines.preprocess.transforms import load_transform
from tests.conftest import image_config


def _paths(count: int, start: int = 0) -> list[tuple[str]]:
    return [(f"class{i % 3}/img_{i:05d}.png",) for i in range(start, start + count)]


def test_split_is_stable_across_reruns_and_when_files_are_added(spark):
    split = SplitConfig(train=0.7, val=0.15, test=0.15)
    before = splits.assign_split(spark.createDataFrame(_paths(2000), "relpath string"), split)
    grown = splits.assign_split(spark.createDataFrame(_paths(3000), "relpath string"), split)
    rerun = splits.assign_split(spark.createDataFrame(_paths(2000)[::-1], "relpath string"), split)

    first = dict(before.rdd.map(tuple).collect())
    assert first == dict(rerun.rdd.map(tuple).collect())
    after = dict(grown.rdd.map(tuple).collect())
    assert all(after[path] == name for path, name in first.items())
    counts = {name: list(first.values()).count(name) / len(first) for name in SPLITS}
    assert counts["train"] == pytest.approx(0.7, abs=0.04)
    assert counts["val"] == pytest.approx(0.15, abs=0.03)


def test_python_and_spark_put_every_key_in_the_same_split(spark):
    split = SplitConfig(train=0.6, val=0.2, test=0.2)
    keys = [f"class{i % 7}/näme {i}.jpg" for i in range(3000)]
    by_spark = splits.assign_split(spark.createDataFrame([(k,) for k in keys], "relpath string"), split)
    assert splits.split_names(keys, split).tolist() == [row.split for row in by_spark.collect()]


def _split_pixels(spark, location, size: int) -> np.ndarray:
    rows = spark.read.parquet(str(location)).select("pixels").collect()
    return np.frombuffer(b"".join(row.pixels for row in rows), np.uint8).reshape(-1, size, size, 3)


def test_channel_stats_from_sums_match_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(40 * 16, 3)).astype(np.float64)
    mean, std = preprocess.channel_stats(pixels.sum(0), (pixels**2).sum(0), len(pixels))
    assert mean == pytest.approx(pixels.mean(axis=0).tolist(), rel=1e-9)
    assert std == pytest.approx(pixels.std(axis=0).tolist(), rel=1e-9)


def test_an_image_size_other_than_the_ingested_one_is_an_error(spark, digits_workdir):
    with pytest.raises(DataError, match="re-run ingest"):
        preprocess.run(image_config(digits_workdir, "ingest.image_size=48"), lambda: spark)


def test_index_labels_follows_class_names(spark):
    df = spark.createDataFrame([("b",), ("a",), ("c",)], "label string")
    indexed = splits.index_labels(df, ["a", "b", "c"]).collect()
    assert [row.label for row in indexed] == [1, 0, 2]


def test_preprocess_writes_declared_splits_and_fits_on_train_only(spark, digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    report = atomic.read_json(catalog.preprocess_report)
    transform = load_transform(catalog.transform)
    assert transform.class_names == [str(d) for d in range(10)]

    total = 0
    for name in SPLITS:
        data = spark.read.parquet(str(catalog.split(name)))
        columns = {field.name: field.dataType for field in data.schema}
        assert all(columns.get(field.name) == field.dataType for field in IMAGE_SPLIT), columns
        assert report["splits"][name]["rows"] == data.count()
        assert report["splits"][name]["row_groups"] >= 2  # enough for the default two ranks
        total += data.count()
    assert total == atomic.read_json(catalog.ingest_report)["rows_written"] == 1797

    size = transform.image_size
    train = _split_pixels(spark, catalog.split("train"), size).reshape(-1, 3).astype(np.float64)
    assert transform.mean == pytest.approx(train.mean(axis=0).tolist(), rel=1e-9)
    assert transform.std == pytest.approx(train.std(axis=0).tolist(), rel=1e-9)
    everything = _split_pixels(spark, catalog.ingested, size).reshape(-1, 3).astype(np.float64)
    assert transform.mean != pytest.approx(everything.mean(axis=0).tolist(), rel=1e-9)


def test_report_counts_and_digests_match_the_written_splits(spark, digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    report = atomic.read_json(catalog.preprocess_report)
    ingested = spark.read.parquet(str(catalog.ingested)).select("relpath", "pixels_hash").collect()
    hash_of = {row.relpath: row.pixels_hash for row in ingested}
    for name in SPLITS:
        split = spark.read.parquet(str(catalog.split(name))).select("relpath", "label").collect()
        counts = Counter(row.label for row in split)
        assert report["splits"][name]["label_counts"] == [counts.get(c, 0) for c in report["class_names"]]
        # The digest computed before writing covers exactly the rows that were written.
        paths, labels = [row.relpath for row in split], [row.label for row in split]
        shares = row_digests(paths, labels, np.array([hash_of[path] for path in paths], np.int64))
        assert report["splits"][name]["digest"] == f"{int(np.bitwise_xor.reduce(shares)):016x}"


def test_a_split_digest_changes_when_two_images_swap_their_pixels_and_not_with_the_order():
    paths, labels = ["cat/a.jpg", "dog/b.jpg", "dog/c.jpg"], ["cat", "dog", "dog"]
    hashes = np.array([11, -22, 33], np.int64)

    def digest(order, pixels=hashes):
        return np.bitwise_xor.reduce(
            row_digests([paths[i] for i in order], [labels[i] for i in order], pixels[order])
        )

    assert digest([0, 1, 2]) == digest([2, 0, 1])
    assert digest([0, 1, 2]) != digest([0, 1, 2], hashes[[1, 0, 2]])  # a.jpg and b.jpg swapped


def _inodes(location) -> set[int]:
    return {part.stat().st_ino for part in location.glob("*.parquet")}


def test_the_splits_are_ingests_files_unless_the_split_changes(spark, digits_workdir, tmp_path):
    """Ingest writes each image into its split's file once; preprocess publishes those files (hard
    links: no pixel read again). A changed split is written anew, each row where the new split puts
    it, with its class; going back to ingest's split publishes its files again."""
    import shutil

    catalog = Catalog.for_workdir(digits_workdir)
    for name in SPLITS:
        assert _inodes(catalog.split(name)) == _inodes(catalog.ingested_split(name)) != set()

    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    catalog = Catalog.for_workdir(workdir)
    changed = ("preprocess.split.train=0.5", "preprocess.split.val=0.25", "preprocess.split.test=0.25")
    config = image_config(workdir, *changed)
    report = preprocess.run(config, lambda: spark)
    relpaths = []
    for name in SPLITS:
        assert not _inodes(catalog.split(name)) & _inodes(catalog.ingested_split(name))
        rows = spark.read.parquet(str(catalog.split(name))).select("relpath", "label").collect()
        assert report["splits"][name]["rows"] == len(rows)
        assert set(splits.split_names([row.relpath for row in rows], config.preprocess.split)) == {name}
        assert all(row.relpath.split("/")[0] == row.label for row in rows)
        relpaths += [row.relpath for row in rows]
    assert len(relpaths) == len(set(relpaths)) == 1797

    preprocess.run(image_config(workdir), lambda: spark)
    for name in SPLITS:
        assert _inodes(catalog.split(name)) == _inodes(catalog.ingested_split(name))


def test_row_group_size_follows_config(spark, tmp_path, digits_workdir):
    config = image_config(digits_workdir)
    sizes = parquet.row_group_sizes(Catalog.for_workdir(digits_workdir).split("train"))
    # Row groups are cut by bytes; they land near the configured row count, never far above it.
    assert max(sizes) <= 1.5 * config.preprocess.rows_per_row_group
    assert len(sizes) >= config.train.num_proc


def test_atomic_write_leaves_old_data_when_the_job_dies(spark, tmp_path):
    target = tmp_path / "table.parquet"
    spark_writes.write_parquet_atomically(spark.range(5), target)

    from pyspark.sql import functions as F

    crash_on_row_3 = F.when(F.col("id") == 3, F.raise_error(F.lit("simulated crash"))).otherwise(F.col("id"))
    failing = spark.range(5).withColumn("value", crash_on_row_3.cast("long"))
    with pytest.raises(Exception, match="simulated crash"):
        spark_writes.write_parquet_atomically(failing, target)
    assert spark.read.parquet(str(target)).count() == 5
    spark_writes.write_parquet_atomically(spark.range(7), target)
    assert spark.read.parquet(str(target)).count() == 7


def test_preprocess_without_ingest_says_what_to_run(spark, tmp_path):
    with pytest.raises(DataError, match="run the ingest stage first"):
        preprocess.run(image_config(tmp_path / "empty"), lambda: spark)


def test_row_groups_mix_the_classes(digits_workdir):
    """Class folders are read in a mixed order: a rank's row groups must not each hold one class."""
    import pyarrow.parquet as pq

    location = Catalog.for_workdir(digits_workdir).split("train")
    for part in sorted(location.glob("part-*.parquet")):
        parquet_file = pq.ParquetFile(part)
        for index in range(parquet_file.num_row_groups):
            labels = parquet_file.read_row_group(index, columns=["label"]).column("label").to_pylist()
            if len(labels) >= 20:  # a file's last row group may hold a few rows
                assert len(set(labels)) >= 5, labels
