"""A second file system for real: S3 served by a local moto server process (moto[server]).

The Python side is tested against it end to end: listing and reading (ingest's source), Parquet
written by Spark's Python workers with the marker commit, JSON records, an image ingest from
``s3://`` through the CLI in a fresh process (whose Spark workers inherit ``AWS_ENDPOINT_URL``) and
into an ``s3://`` workdir. Spark itself has no S3 connector here (no hadoop-aws jar): stages that
need Spark to read ``s3://`` must fail with one line saying what to add.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.core import locations
from pipelines.core.catalog import Catalog
from pipelines.core.errors import ConfigError, DataError
from pipelines.ingest import stage as ingest_stage
from pipelines.io import atomic, filesystems, parquet, spark_writes
from pipelines.preprocess import stage as preprocess_stage
from pipelines.runtime.spark import explain_spark_failure
from tests.conftest import IMAGE_CONFIG, ROOT, image_config, text_config
from tests.io.test_storage import SCHEMA, _batches
from tests.support.s3 import moto_s3

BUCKET = "dlfusion"


@pytest.fixture(scope="module")
def s3(spark):
    """A moto S3 server with one bucket; this process, the CLI processes it starts and the shared
    Spark session's Python workers are pointed at it (``AWS_*`` variables).

    Returns the environment variables that reach it."""
    with moto_s3(BUCKET) as env:
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        # The session's JVM (and so its Python workers' environment) may have started before this
        # server: give its workers the variables as spark.executorEnv.* would (what a cluster needs).
        context = spark.sparkContext
        context.environment.update(env)
        yield env
        for name, value in saved.items():
            context.environment.pop(name, None)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _put(uri: str, content: bytes) -> None:
    fs, inner, _ = filesystems.filesystem(uri)
    with fs.open_output_stream(inner) as stream:
        stream.write(content)


def _keys(prefix: str) -> list[str]:
    """Every object under ``s3://BUCKET/prefix``, relative to it."""
    fs, inner, _ = filesystems.filesystem(f"s3://{BUCKET}/{prefix}")
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sorted(i.path[len(inner) + 1 :] for i in infos if i.type == pafs.FileType.File)


# Locations, with no server needed.


def test_uris_keep_their_scheme_and_local_paths_stay_paths(tmp_path):
    catalog = Catalog.for_workdir("s3://bucket/work/")
    assert str(catalog.ingested) == "s3://bucket/work/ingest/records.parquet"
    assert str(catalog.trained_model("r").parent) == "s3://bucket/work/checkpoints/r"
    assert str(locations.Uri("hdfs://nn:8020/a//b/").parent.parent) == "hdfs://nn:8020"
    for local in (tmp_path, str(tmp_path), f"file:{tmp_path}", f"file://{tmp_path}"):
        assert Catalog.for_workdir(local).workdir == tmp_path.resolve()
    assert not locations.renames_atomically("s3a://bucket/x") and not locations.renames_atomically("gs://b/x")
    assert all(locations.renames_atomically(x) for x in (tmp_path, f"file:{tmp_path}", "hdfs://nn/x"))
    assert str(image_config("s3://bucket/w").workdir) == "s3://bucket/w"
    assert image_config(f"file://{tmp_path}").workdir == tmp_path
    with pytest.raises(TypeError):  # never a silent local folder named "s3:"
        Path(catalog.ingested)


def test_a_uri_workdir_gives_one_config_line_where_a_local_file_is_needed(capsys):
    config = image_config("s3://bucket/w")
    with pytest.raises(
        ConfigError, match=r"^workdir: s3://bucket/w is a URI, but the default MLflow database"
    ):
        _ = config.tracking_uri
    code = cli.main(["ingest", str(IMAGE_CONFIG), "workdir=s3://bucket/w", "mlflow.tracking_uri=http://x:1"])
    assert code == cli.EXIT_CONFIG
    assert capsys.readouterr().err.splitlines() == [
        "dlfusion: error: config error: workdir: s3://bucket/w is a URI, but the dlfusion command (its lock "
        "and log files) needs a local path or a shared mount (NFS, ...); data.source may be a URI"
    ]
    from pipelines.train import driver

    with pytest.raises(ConfigError, match="training .* needs a local path or a shared mount"):
        driver.run(config)
    assert not Path("s3:").exists() and not (ROOT / "s3:").exists()


# The Python side against the moto server.


def test_listing_and_reading_files_on_s3(s3):
    for relpath, content in {
        "a/1.txt": b"one",
        "a/b/2.txt": b"two!",
        "a/.hidden": b"h",
        "c/_meta": b"",
    }.items():
        _put(f"s3://{BUCKET}/tree/{relpath}", content)
    listing = filesystems.list_files(f"s3://{BUCKET}/tree")
    assert listing.select(["relpath", "size"]).to_pydict() == {
        "relpath": ["a/.hidden", "a/1.txt", "a/b/2.txt", "c/_meta"],
        "size": [1, 3, 4, 0],
    }
    assert all(mtime > 0 for mtime in listing.column("mtime").to_pylist())  # the objects' modification times
    assert filesystems.visible_files(listing).column("relpath").to_pylist() == ["a/1.txt", "a/b/2.txt"]
    uris = filesystems.file_uris(f"s3a://{BUCKET}/tree/a/b")  # Hadoop's scheme name opens the same store
    assert uris == [f"s3a://{BUCKET}/tree/a/b/2.txt"]
    assert filesystems.read_bytes(uris[0]) == b"two!"
    with filesystems.open_input(f"s3://{BUCKET}/tree/a/1.txt") as stream:
        assert stream.read() == b"one"
    assert filesystems.source_uri(f"s3://{BUCKET}/tree/") == f"s3://{BUCKET}/tree"
    with pytest.raises(FileNotFoundError):
        filesystems.list_files(f"s3://{BUCKET}/nothing-here")
    # one client per bucket and settings, not one per file
    assert filesystems.filesystem(f"s3://{BUCKET}/x")[0] is filesystems.filesystem(f"s3://{BUCKET}/y/z")[0]


def test_json_records_on_s3_are_single_objects(s3):
    record = locations.Uri(f"s3://{BUCKET}/records/runs/image_cnn.json")
    assert not filesystems.is_file(record)
    atomic.write_json_atomically({"run_id": "a"}, record)
    atomic.write_json_atomically({"run_id": "b"}, record)
    assert filesystems.is_file(record) and atomic.read_json(record) == {"run_id": "b"}
    assert _keys("records") == ["runs/image_cnn.json"]  # no temporary object left


def test_spark_tasks_write_parquet_to_s3_and_commit_with_a_marker(spark, s3):
    batch = _batches()

    def produce(task):
        for _ in range(3):
            yield ("even" if task % 2 == 0 else "odd"), batch(task, 50)

    locations = {value: f"s3://{BUCKET}/out/{value}.parquet" for value in ("even", "odd", "none")}
    files = spark_writes.write_from_tasks(spark, 4, produce, SCHEMA, locations, row_group_bytes=40_000)
    assert all(uri.startswith(f"s3://{BUCKET}/out/.tmp-") for _, uri, _ in files)  # written by the workers
    keys = _keys("out")
    assert not [key for key in keys if key.startswith(".tmp-")]  # staging removed
    assert keys == sorted(
        [f"{v}.parquet/_SUCCESS" for v in locations]
        + ["none.parquet/part-00000-empty.parquet"]
        + [f"even.parquet/part-{t:05d}-0.parquet" for t in (0, 2)]
        + [f"odd.parquet/part-{t:05d}-0.parquet" for t in (1, 3)]
    )
    assert sum(parquet.row_group_sizes(locations["even"])) == 300
    assert max(parquet.row_group_sizes(locations["odd"])) <= 40
    assert sum(parquet.row_group_sizes(locations["none"])) == 0
    odd = parquet.data_files(locations["odd"])
    assert odd == [f"s3://{BUCKET}/out/odd.parquet/part-{t:05d}-0.parquet" for t in (1, 3)]
    fs, inner, _ = filesystems.filesystem(odd[0])
    assert pq.read_table(inner, filesystem=fs).column("key").to_pylist()[:2] == ["t1-0", "t1-1"]


def test_commit_on_s3_keeps_only_successful_attempts_and_replaces_the_old_data_set(s3):
    staging = f"s3://{BUCKET}/commit/.tmp-x-out"
    for name in ("part-00000-0", "part-00001-0", "part-00001-1"):  # task 1's first attempt failed
        fs, inner, _ = filesystems.filesystem(f"{staging}/out/{name}.parquet")
        pq.write_table(pa.Table.from_batches([_batches()(0, 2)]), inner, filesystem=fs)
    target = f"s3://{BUCKET}/commit/out.parquet"
    _put(f"{target}/part-00009-0.parquet", b"an older data set's file")
    _put(f"{target}/_SUCCESS", b"")
    reported = [("out", f"{staging}/out/{name}.parquet", 2) for name in ("part-00000-0", "part-00001-1")]
    spark_writes._commit_staged(staging, reported, {"out": target}, SCHEMA)
    assert _keys("commit") == [
        "out.parquet/_SUCCESS",
        "out.parquet/part-00000-0.parquet",
        "out.parquet/part-00001-1.parquet",
    ]
    assert parquet.row_group_sizes(target) == [2, 2]


def test_published_files_on_s3_are_copied_into_a_committed_data_set_and_partitions_count(s3):
    """``publish_files`` (preprocess's image splits) copies on an object store and commits with the
    marker; a data set of partition folders is trusted when each of them is committed."""
    source = f"s3://{BUCKET}/pub/records.parquet/split=train"
    fs, inner, _ = filesystems.filesystem(source)
    pq.write_table(pa.Table.from_batches([_batches()(0, 3)]), f"{inner}/part-00000-0.parquet", filesystem=fs)
    with pytest.raises(DataError, match="incomplete data set"):  # its partition has no marker yet
        parquet.row_group_sizes(f"s3://{BUCKET}/pub/records.parquet")
    _put(f"{source}/_SUCCESS", b"")
    assert parquet.row_group_sizes(f"s3://{BUCKET}/pub/records.parquet") == [3]

    target = f"s3://{BUCKET}/pub/train.parquet"
    spark_writes.publish_files({"train": parquet.data_files(source)}, {"train": target}, SCHEMA)
    assert [key for key in _keys("pub") if key.startswith("train")] == [
        "train.parquet/_SUCCESS",
        "train.parquet/part-00000.parquet",
    ]
    assert parquet.row_group_sizes(target) == [3]
    assert not [key for key in _keys("pub") if ".tmp-" in key]


def test_a_data_set_without_its_marker_is_not_trusted_on_s3(s3):
    location = f"s3://{BUCKET}/half/records.parquet"
    fs, inner, _ = filesystems.filesystem(location)
    pq.write_table(pa.Table.from_batches([_batches()(0, 3)]), f"{inner}/part-00000-0.parquet", filesystem=fs)
    for read in (parquet.data_files, parquet.row_group_sizes):
        with pytest.raises(DataError, match="incomplete data set: no _SUCCESS marker"):
            read(location)
    _put(f"{location}/_SUCCESS", b"")
    assert parquet.row_group_sizes(location) == [3]


def test_spark_without_an_s3_connector_fails_with_one_line_naming_it(spark, s3):
    config = text_config(f"s3://{BUCKET}/nowhere")
    with pytest.raises(ConfigError) as raised:
        preprocess_stage.run(config)  # Spark reads the ingested records
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"s3://{BUCKET}/nowhere/ingest/records.parquet: Spark has no Hadoop FileSystem")
    assert "hadoop-aws" in message and "s3a://" in message
    with pytest.raises(Exception) as raw:  # a read outside the storage layer: the CLI explains it
        spark.read.csv(f"s3://{BUCKET}/tree").count()
    explained = explain_spark_failure(raw.value)
    assert isinstance(explained, ConfigError) and "hadoop-aws" in str(explained)


@pytest.fixture(scope="module")
def s3_digits(s3, tmp_path_factory) -> tuple[str, int, int]:
    """Part of the digits demo (every 15th image, all classes: moto answers a request in tens of ms)
    plus two files that cannot be decoded, uploaded to ``s3://BUCKET/digits``.
    Returns (source URI, files, undecodable files)."""
    from pipelines.kinds.image_cnn.demo import write_digits_images

    local = write_digits_images(tmp_path_factory.mktemp("digits") / "digits")
    files = sorted(local.rglob("*.png"))[::15]
    source = f"s3://{BUCKET}/digits"
    uploads = {f"{source}/{p.relative_to(local)}": p.read_bytes() for p in files}
    uploads[f"{source}/3/truncated.png"] = files[0].read_bytes()[:40]
    uploads[f"{source}/7/empty.png"] = b""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: _put(*item), uploads.items()))
    return source, len(uploads), 2


def test_cli_ingests_images_from_s3_into_a_local_workdir(s3, s3_digits, tmp_path):
    source, files, bad = s3_digits
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(  # a fresh process: its Spark workers inherit AWS_ENDPOINT_URL
        [sys.executable, "-m", "pipelines.cli", "ingest", str(IMAGE_CONFIG), f"data.source={source}"]
        + [f"workdir={tmp_path / 'work'}", "spark.master=local[2]", "--summary-json", str(summary_path)],
        cwd=ROOT,
        env={**os.environ, **s3},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ingest = json.loads(summary_path.read_text())["ingest"]
    assert ingest["files_seen"] == files == ingest["rows_written"] + ingest["rows_quarantined"]
    assert ingest["rows_quarantined"] == bad and ingest["classes"] == 10
    catalog = Catalog.for_workdir(tmp_path / "work")
    paths = pq.read_table(catalog.quarantine, columns=["path"]).column("path").to_pylist()
    assert sorted(paths) == [f"{source}/3/truncated.png", f"{source}/7/empty.png"]


def test_ingest_into_an_s3_workdir_runs_on_the_python_side(spark, s3, s3_digits):
    source, files, bad = s3_digits
    config = image_config(f"s3://{BUCKET}/work", f"data.source={source}")
    report = ingest_stage.run(config).summary["ingest"]
    assert report["files_seen"] == files == report["rows_written"] + report["rows_quarantined"]
    assert report["rows_quarantined"] == bad and report["classes"] == 10
    catalog = Catalog.for_workdir(config.workdir)
    assert atomic.read_json(catalog.ingest_report)["files_seen"] == files
    assert all(
        uri.startswith(f"s3://{BUCKET}/work/ingest/records.parquet/")
        for uri in parquet.data_files(catalog.ingested)
    )
    keys = _keys("work/ingest")
    assert "quarantine.parquet/_SUCCESS" in keys
    assert all(f"records.parquet/split={name}/_SUCCESS" in keys for name in ("train", "val", "test"))
    assert not [key for key in _keys("work") if ".tmp-" in key]
    # Image preprocess reads the small columns with pyarrow too: the splits are published on S3.
    splits = preprocess_stage.run(config).summary["splits"]
    assert sum(splits.values()) == report["rows_written"]
    assert all(f"preprocess/{name}.parquet/_SUCCESS" in _keys("work") for name in ("train", "val", "test"))
