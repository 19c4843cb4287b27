"""Preprocess: stable split, statistics from train only, declared schema, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import preprocess, schemas, storage
from pipelines.catalog import SPLITS, Catalog
from pipelines.config import SplitConfig
from pipelines.errors import DataError
from pipelines.transforms import load_transform
from tests.conftest import image_config


def _paths(count: int, start: int = 0) -> list[tuple[str]]:
    return [(f"class{i % 3}/img_{i:05d}.png",) for i in range(start, start + count)]


def test_split_is_stable_across_reruns_and_when_files_are_added(spark):
    split = SplitConfig(train=0.7, val=0.15, test=0.15)
    before = preprocess.assign_split(spark.createDataFrame(_paths(2000), "relpath string"), split)
    grown = preprocess.assign_split(spark.createDataFrame(_paths(3000), "relpath string"), split)
    rerun = preprocess.assign_split(spark.createDataFrame(_paths(2000)[::-1], "relpath string"), split)

    first = dict(before.rdd.map(tuple).collect())
    assert first == dict(rerun.rdd.map(tuple).collect())
    after = dict(grown.rdd.map(tuple).collect())
    assert all(after[path] == name for path, name in first.items())
    counts = {name: list(first.values()).count(name) / len(first) for name in SPLITS}
    assert counts["train"] == pytest.approx(0.7, abs=0.04)
    assert counts["val"] == pytest.approx(0.15, abs=0.03)


def test_channel_statistics_match_numpy(spark):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 4, 4, 3), dtype=np.uint8)
    df = spark.createDataFrame([(bytearray(i.tobytes()),) for i in images], "pixels binary")
    mean, std = preprocess.fit_channel_stats(df, 4)
    assert mean == pytest.approx(images.reshape(-1, 3).mean(axis=0).tolist(), rel=1e-9)
    assert std == pytest.approx(images.reshape(-1, 3).std(axis=0).tolist(), rel=1e-9)


def test_pixels_that_do_not_match_the_image_size_are_an_error(spark):
    df = spark.createDataFrame([(bytearray(b"\1\2\3" * 5),)], "pixels binary")
    with pytest.raises(DataError, match="image_size=4"):
        preprocess.fit_channel_stats(df, 4)


def test_index_labels_follows_class_names(spark):
    df = spark.createDataFrame([("b",), ("a",), ("c",)], "label string")
    indexed = preprocess.index_labels(df, ["a", "b", "c"]).collect()
    assert [row.label for row in indexed] == [1, 0, 2]


def test_preprocess_writes_declared_splits_and_fits_on_train_only(spark, digits_workdir):
    catalog = Catalog.for_workdir(digits_workdir)
    report = storage.read_json(catalog.preprocess_report)
    transform = load_transform(catalog.transform)
    assert transform.class_names == [str(d) for d in range(10)]

    total = 0
    for name in SPLITS:
        data = spark.read.parquet(str(catalog.split(name)))
        assert [(f.name, f.dataType) for f in data.schema] == [
            (f.name, f.dataType) for f in schemas.IMAGE_SPLIT
        ]
        assert report["splits"][name]["rows"] == data.count()
        assert report["splits"][name]["row_groups"] >= 2  # enough for the default two ranks
        total += data.count()
    assert total == storage.read_json(catalog.ingest_report)["rows_written"] == 1797

    train = spark.read.parquet(str(catalog.split("train")))
    mean, _ = preprocess.fit_channel_stats(train, transform.image_size)
    assert transform.mean == pytest.approx(mean)
    everything = spark.read.parquet(str(catalog.ingested))
    mean_all, _ = preprocess.fit_channel_stats(everything, transform.image_size)
    assert transform.mean != pytest.approx(mean_all, rel=1e-9)


def test_row_group_size_follows_config(spark, tmp_path, digits_workdir):
    config = image_config(digits_workdir)
    sizes = storage.row_group_sizes(Catalog.for_workdir(digits_workdir).split("train"))
    # Row groups are cut by bytes; they land near the configured row count, never far above it.
    assert max(sizes) <= 1.5 * config.preprocess.rows_per_row_group
    assert len(sizes) >= config.preprocess.files_per_split


def test_atomic_write_leaves_old_data_when_the_job_dies(spark, tmp_path):
    target = tmp_path / "table.parquet"
    storage.write_parquet_atomically(spark.range(5), target)

    from pyspark.sql import functions as F

    crash_on_row_3 = F.when(F.col("id") == 3, F.raise_error(F.lit("simulated crash"))).otherwise(F.col("id"))
    failing = spark.range(5).withColumn("value", crash_on_row_3.cast("long"))
    with pytest.raises(Exception, match="simulated crash"):
        storage.write_parquet_atomically(failing, target)
    assert spark.read.parquet(str(target)).count() == 5
    storage.write_parquet_atomically(spark.range(7), target)
    assert spark.read.parquet(str(target)).count() == 7


def test_preprocess_without_ingest_says_what_to_run(spark, tmp_path):
    with pytest.raises(DataError, match="run the ingest stage first"):
        preprocess.run(image_config(tmp_path / "empty"), spark)
