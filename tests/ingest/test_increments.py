"""Incremental ingest: only new, changed and removed files are worked on, every file stays
accounted for, a file's split never moves, the transform is kept, and small increments are merged."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.errors import DataError
from pipelines.ingest import increments
from pipelines.ingest import stage as ingest_stage
from pipelines.io import atomic, parquet
from pipelines.kinds.image_cnn import ingest as image_ingest
from pipelines.preprocess import stage as preprocess_stage
from tests.conftest import image_config


def _listing(rows: list[tuple[str, int, int]]) -> pa.Table:
    relpaths, sizes, mtimes = zip(*rows, strict=True)
    return pa.table({"relpath": list(relpaths), "size": list(sizes), "mtime": list(mtimes)})


def test_difference_finds_new_changed_and_removed_files_by_path_size_and_time():
    snapshot = _listing([("a/1", 10, 1), ("a/2", 10, 1), ("b/3", 10, 1), ("b/4", 10, 1)]).append_column(
        "part", pa.array(["p0", "p0", "p1", "p1"])
    )
    listing = _listing([("a/1", 10, 1), ("a/2", 11, 1), ("b/3", 10, 2), ("c/5", 5, 1)])
    change = increments.difference(listing, snapshot)
    assert (change.added, change.changed, change.removed, change.unchanged) == (1, 2, 1, 1)
    assert change.to_read.column("relpath").to_pylist() == ["a/2", "b/3", "c/5"]
    assert {part: sorted(paths) for part, paths in change.dropped.items()} == {
        "p0": ["a/2"],
        "p1": ["b/3", "b/4"],
    }
    assert (
        increments.difference(listing, change.to_read.append_column("part", pa.array(["x"] * 3))).added == 1
    )


def test_a_file_that_lost_some_of_its_records_in_an_ingest_that_died_is_read_again_whole(tmp_path):
    # a.tsv's records are in two data files (ingested and quarantine), b.tsv's in the first only;
    # an ingest that died after rewriting the first left a.tsv with its quarantined records alone.
    snapshot = _listing([("a.tsv", 10, 1), ("a.tsv", 10, 1), ("b.tsv", 10, 1), ("c.tsv", 0, 1)])
    snapshot = snapshot.append_column("part", pa.array(["ingested/p0", "quarantine/p0", "ingested/p0", None]))
    kept = increments.reconciled(snapshot, {"quarantine/p0"})
    change = increments.difference(_listing([("a.tsv", 10, 1), ("b.tsv", 10, 1), ("c.tsv", 0, 1)]), kept)
    assert change.to_read.column("relpath").to_pylist() == ["a.tsv", "b.tsv"]
    assert change.dropped == {"quarantine/p0": ["a.tsv"]} and change.unchanged == 1  # c: no records

    # A snapshot never names records of a file no longer listed (they would be served as data).
    parts = pa.table({"relpath": ["a.tsv", "gone.tsv"], "part": pa.array(["p0", "p0"], increments.PART)})
    with pytest.raises(DataError, match="gone.tsv, which is no longer listed"):
        increments.record_snapshot(
            Catalog.for_workdir(tmp_path), 1, _listing([("a.tsv", 10, 1)]), parts, True
        )


def _image(path: Path, label: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(60 * label + 40, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _records(catalog: Catalog) -> dict[str, tuple[str, int]]:
    """relpath -> (split, pixels hash) of every ingested record."""
    records = {}
    for name in SPLITS:
        for file in parquet.data_files(catalog.ingested_split(name)):
            table = pq.read_table(file.removeprefix("file:"), columns=["relpath", "pixels_hash"])
            for relpath, digest in zip(
                *(table.column(c).to_pylist() for c in table.column_names), strict=True
            ):
                assert relpath not in records, f"{relpath} ingested twice"
                records[relpath] = (name, digest)
    return records


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "images"
    for number in range(150):
        _image(root / f"c{number % 3}" / f"{number:04d}.png", number % 3, number)
    return root


def test_an_increment_reads_only_what_changed_and_keeps_splits_transform_and_accounting(
    spark, tmp_path, tree
):
    config = image_config(tmp_path / "work", f"data.source={tree}", "ingest.compact_files=2")
    catalog = Catalog.for_workdir(config.workdir)
    first = ingest_stage.run(config).summary["ingest"]
    assert first["increment"]["whole"] and first["increment"]["files_read"] == first["files_seen"] == 150
    preprocess_stage.run(config)
    before, transform = _records(catalog), atomic.read_json(catalog.transform)

    for number in range(150, 170):  # 20 new files and a broken one
        _image(tree / f"c{number % 3}" / f"{number:04d}.png", number % 3, number)
    (tree / "c0" / "broken.png").write_bytes(b"not an image")
    changed = sorted(tree.glob("c1/*.png"))[:5]
    for number, path in enumerate(changed):
        _image(path, 1, 1000 + number)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    removed = sorted(tree.glob("c2/*.png"))[:10]
    for path in removed:
        path.unlink()

    # This increment in Spark tasks; the small nights below in the driver, Spark never started.
    in_tasks = image_config(config.workdir, f"data.source={tree}", "ingest.driver_increment_files=0")
    second = ingest_stage.run(in_tasks).summary["ingest"]
    assert second["spark_jobs"] >= 1
    increment = second["increment"]
    assert not increment["whole"]
    assert (increment["added"], increment["changed"], increment["removed"]) == (21, 5, 10)
    assert increment["files_read"] == 26 == increment["rows_written"] + increment["rows_quarantined"]
    assert increment["rows_quarantined"] == 1
    assert second["files_seen"] == 161 == second["rows_written"] + second["rows_quarantined"]
    after = _records(catalog)
    assert set(after) == set(before) - {f"c2/{p.name}" for p in removed} | {
        f"c{n % 3}/{n:04d}.png" for n in range(150, 170)
    }
    for relpath, (split, digest) in before.items():
        if relpath in after:  # a file's split never moves; only changed files were read again
            assert after[relpath][0] == split
            assert (after[relpath][1] != digest) == (relpath in {f"c1/{p.name}" for p in changed})
    snapshot = increments.latest_snapshot(catalog)
    assert snapshot[0] == 2 and snapshot[1].num_rows == 161

    summary = preprocess_stage.run(config).summary
    assert summary["preprocess"]["transform_kept"] and atomic.read_json(catalog.transform) == transform
    assert sum(summary["splits"].values()) == 160
    assert summary["preprocess"]["snapshot"] == 2
    assert pq.read_table(catalog.published_snapshot).num_rows == 161
    refit = preprocess_stage.run(image_config(config.workdir, f"data.source={tree}", "preprocess.refit=true"))
    assert not refit.summary["preprocess"]["transform_kept"]

    # What an ingest that died leaves: a file it wrote that no snapshot knows, and a data file gone.
    train = parquet.data_files(catalog.ingested_split("train"))[0].removeprefix("file:")
    shutil.copy(train, Path(train).with_name("i09999-part-00000-0.parquet"))
    gone = Path(parquet.data_files(catalog.ingested_split("val"))[-1].removeprefix("file:"))
    lost = pq.read_metadata(gone).num_rows
    gone.unlink()

    files = {name: len(parquet.data_files(catalog.ingested_split(name))) for name in SPLITS}
    started = []
    for number in range(170, 176):  # small nights: their files are merged, none is lost
        _image(tree / "c0" / f"{number:04d}.png", 0, number)
        night = asdict(image_ingest.run(config, lambda: started.append(1) or spark, str(tree)))
        assert night["spark_jobs"] == 0 and not started
        assert night["increment"]["files_read"] == 1 + (lost if number == 170 else 0)
        assert night["files_seen"] == 162 + number - 170
    assert all(len(parquet.data_files(catalog.ingested_split(name))) <= files[name] + 3 for name in SPLITS)
    assert len(_records(catalog)) == 166

    forced = ingest_stage.run(config, force=True).summary["ingest"]
    assert forced["increment"]["whole"] and forced["increment"]["files_read"] == 167
    assert increments.snapshot_numbers(catalog) == [1]
