"""Data sets written by Spark, atomically: beside the target then renamed, or committed by a
marker on an object store; and Python tasks that write their own Parquet files.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines.core import faults, locations
from pipelines.core.errors import ConfigError
from pipelines.core.locations import Uri, is_uri, location, renames_atomically
from pipelines.io.filesystems import S3_SCHEMES, filesystem, source_uri
from pipelines.io.parquet import COMMIT_MARKER

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The file of a data set that got no row: it carries the schema.
EMPTY_FILE = "part-00000-empty.parquet"


def _hadoop_path(spark: SparkSession, location: str | Path | Uri):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(str(location))
    try:
        return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    except Exception as err:
        if "No FileSystem for scheme" not in str(err):
            raise
        raise missing_hadoop_filesystem(str(location)) from None


def missing_hadoop_filesystem(where: str) -> ConfigError:
    """The one line for a URI that Spark's Hadoop libraries cannot open (no connector on the classpath)."""
    scheme = locations.scheme(where) or where.split(":", 1)[0]
    if scheme in S3_SCHEMES:
        need = (
            "add hadoop-aws and its AWS SDK bundle, of the Hadoop version Spark ships, to Spark's classpath "
            "(spark.jars.packages or spark.jars) and use s3a:// URIs (or set spark.hadoop.fs.s3.impl="
            "org.apache.hadoop.fs.s3a.S3AFileSystem for s3://)"
        )
    else:
        need = f"add the Hadoop connector for {scheme}:// to Spark's classpath (spark.jars.packages)"
    return ConfigError(where, f"Spark has no Hadoop FileSystem for scheme {scheme!r}: {need}")


def write_parquet_atomically(df: DataFrame, location: str | Path, **options: str) -> None:
    """Write ``df`` as Parquet to a temporary sibling, then rename it into place.

    A job that dies mid-write leaves only a ``.tmp-*`` folder, never half a data set at ``location``.
    """
    write_partitions_atomically(df, None, {None: location}, **options)


def write_partitions_atomically(
    df: DataFrame, column: str | None, locations: dict[Any, str | Path], **options: str
) -> None:
    """Write ``df`` in one Spark job, partitioned by ``column``; the rows whose ``column`` is ``value``
    end up at ``locations[value]`` (``column`` itself is not stored), each replaced atomically by a rename.

    A value with no rows gets an empty data set with the schema, so every location exists after.
    One job and no sort: the rows are read and computed once whatever the number of outputs
    (``spark.sql.maxConcurrentOutputFileWriters``, set by ``pipelines.runtime.spark``, avoids a sort).
    """
    spark = df.sparkSession
    first = location(next(iter(locations.values())))
    staging = f"{first.parent}/.tmp-{uuid.uuid4().hex[:8]}-{first.name}"
    staged_root, fs = _hadoop_path(spark, staging)  # fails at once when Spark cannot reach it
    writer = df.write.options(**options).mode("overwrite")
    (writer.partitionBy(column) if column else writer).parquet(staging)
    data_columns = [field for field in df.schema.fields if field.name != column]
    for value, place in locations.items():
        staged, _ = _hadoop_path(spark, f"{staging}/{column}={value}" if column else staging)
        if not fs.exists(staged):
            _write_empty_parquet(staged.toString(), data_columns)
        target, _ = _hadoop_path(spark, place)
        marked = not renames_atomically(place)  # object store: a copy, committed by the marker
        marker = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(target, COMMIT_MARKER)
        if fs.exists(target):
            if marked:
                fs.delete(marker, False)  # first: readers stop trusting the old data set
            fs.delete(target, True)
        if not fs.rename(staged, target):
            raise OSError(f"could not move {staged.toString()} to {place}")
        if marked:
            fs.delete(marker, False)  # a marker Spark wrote into the staged folder
            fs.create(marker, True).close()
    fs.delete(staged_root, True)


def write_partitions(
    df: DataFrame,
    column: str,
    locations: dict[Any, str | Path],
    schema: pa.Schema,
    by: str | None = None,
    append: str | None = None,
    **options: str,
) -> list[tuple[str, str, int]]:
    """Write ``df`` in one Spark job, partitioned by ``column``: the rows whose ``column`` is ``value``
    go to ``locations[value]``, each replaced as ``write_from_tasks`` replaces it (an empty data set
    of ``schema`` where there is no row). ``by``: a column whose value starts the name of each file
    (``{value}-part-...``), which then holds only rows of that value. With ``append`` (an
    increment), the files join the data sets there instead, named ``{append}-...``. Returns (value,
    file URI, rows) for each file written (with ``append``, where it is now), rows from its footer."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    staging = _staging_uri(next(iter(locations.values())))
    _hadoop_path(df.sparkSession, staging)  # fails at once when Spark cannot reach it
    columns = [by, column] if by else [column]
    df.write.options(**options).mode("overwrite").partitionBy(*columns).parquet(staging)
    fs, root, prefix = filesystem(staging)
    groups = [("", root)]
    if by:
        folders = fs.get_file_info(pafs.FileSelector(root))
        groups = [
            (f"{info.base_name.split('=', 1)[1]}-", info.path)
            for info in folders
            if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{by}=")
        ]
    files = []
    for value in locations:
        fs.create_dir(f"{root}/{value}", recursive=True)
        for name_start, folder in groups:
            selector = pafs.FileSelector(f"{folder}/{column}={value}", allow_not_found=True)
            for info in fs.get_file_info(selector):
                if info.type == pafs.FileType.File and info.base_name.endswith(".parquet"):
                    target = f"{root}/{value}/{name_start}{info.base_name}"
                    fs.move(info.path, target)
                    with fs.open_input_file(target) as handle:
                        rows = pq.ParquetFile(handle).metadata.num_rows
                    files.append((value, prefix + target, rows))
    if append:
        return _append_staged(staging, files, locations, append)
    _commit_staged(staging, files, locations, dict.fromkeys(locations, schema))
    return [(value, _committed(uri, locations[value]), rows) for value, uri, rows in files]


def _committed(staged_uri: str, place: str | Path) -> str:
    """Where ``_commit_staged`` put the file ``staged_uri``: the same name at ``place``."""
    _, target, prefix = filesystem(place)
    return f"{prefix}{target}/{staged_uri.rsplit('/', 1)[1]}"


def write_from_tasks(
    spark: SparkSession | None,
    tasks: int,
    produce: Callable[[int], Iterator[tuple[str, pa.RecordBatch]]],
    schema: pa.Schema | dict[str, pa.Schema],
    locations: dict[str, str | Path],
    row_group_bytes: int,
    compression: str = "none",
    plain_columns: tuple[str, ...] = (),
    append: str | None = None,
) -> list[tuple[str, str, int]]:
    """Run ``produce(task)`` for task 0..tasks-1 as Spark tasks; each task writes the (value, batch)
    pairs it yields as Parquet straight from its Python worker, then every ``locations[value]`` is
    replaced by its files (an empty data set where no task wrote that value): with a rename, or on
    object stores by moving the files and writing ``COMMIT_MARKER`` last (``_commit_staged``).
    ``schema`` is every value's, or one per value (``{value: schema}``).

    Rows never cross into the JVM: Spark schedules, retries and reports progress, while the
    bytes go from the worker that computed them to storage (any pyarrow file system). Row groups
    hold about ``row_group_bytes``; ``plain_columns`` (large unique values such as pixels) get no
    dictionary and no statistics. Only the files of successful task attempts are kept.
    With ``append``, the files join the data sets at the locations instead, named
    ``{append}-part-...`` (an increment: ``ingest.increments``).
    Without ``spark`` (work too small to be worth starting Spark's workers), the tasks run here, one
    after the other, and their files are committed the same way.
    Returns (value, file URI, rows) for each file written (staged; with ``append``, where it is now).
    """
    staging = _staging_uri(next(iter(locations.values())))
    schemas = schema if isinstance(schema, dict) else dict.fromkeys(locations, schema)
    settings = {
        value: writer_options(value_schema, compression, plain_columns)
        for value, value_schema in schemas.items()
    }

    def run_tasks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        attempt = TaskContext.get().attemptNumber()
        for batch in batches:
            for task in batch.column("id").to_pylist():
                name = f"part-{task:05d}-{attempt}"
                pairs = _dying_mid_task(produce(task), task, attempt)
                files = _write_task(pairs, name, staging, schemas, row_group_bytes, settings)
                yield pa.RecordBatch.from_pylist(files, schema=_WRITTEN)

    if spark is None:
        written = [
            row
            for task in range(tasks)
            for row in _write_task(
                produce(task), f"part-{task:05d}-0", staging, schemas, row_group_bytes, settings
            )
        ]
    else:
        from pyspark.sql.pandas.types import from_arrow_schema

        frame = spark.range(0, tasks, 1, numPartitions=tasks).mapInArrow(
            run_tasks, from_arrow_schema(_WRITTEN)
        )
        written = [row.asDict() for row in frame.collect()]
    files = [(row["value"], row["file"], row["rows"]) for row in written]
    if append:
        return _append_staged(staging, files, locations, append)
    _commit_staged(staging, files, locations, schemas)
    return files


def writer_options(schema: pa.Schema, compression: str, plain_columns: tuple[str, ...] = ()) -> dict:
    """``pyarrow.parquet.ParquetWriter`` options of the files ``write_from_tasks`` writes:
    ``plain_columns`` (large unique values such as pixels) without dictionary or statistics."""
    ordinary = [name for name in schema.names if name not in plain_columns]
    return {"compression": compression, "use_dictionary": ordinary, "write_statistics": ordinary}


def _append_staged(staging: str, files: list[tuple[str, str, int]], locations: dict, tag: str) -> list:
    """Move the successful attempts' files (``files``) into the data sets at ``locations``, named
    ``{tag}-{name}``; a data set that does not exist yet is created (with the marker on an object
    store). Returns (value, URI, rows) of each file moved."""
    import pyarrow.fs as pafs

    fs, staging_root, _ = filesystem(staging)
    moved = []
    for value, uri, rows in files:
        _, target, prefix = filesystem(locations[value])
        fs.create_dir(target, recursive=True)
        name = f"{tag}-{uri.rsplit('/', 1)[1]}"
        fs.move(filesystem(uri)[1], f"{target}/{name}")
        moved.append((value, f"{prefix}{target}/{name}", rows))
    for place in locations.values():
        _, target, _ = filesystem(place)
        if (
            not renames_atomically(place)
            and fs.get_file_info(f"{target}/{COMMIT_MARKER}").type != pafs.FileType.File
        ):
            fs.create_dir(target, recursive=True)
            _write_marker(fs, target)
    fs.delete_dir(staging_root)
    return moved


def publish_files(sources: dict[str, list[str]], locations: dict[str, str | Path], schema: pa.Schema) -> None:
    """Make the Parquet files ``sources[value]`` (URIs) the data set at ``locations[value]``, without
    reading them: hard links where the file system is local (no byte is copied; the files stay as
    they are if their first data set is replaced later), a copy elsewhere (server-side on object
    stores). Each location is replaced as ``write_from_tasks`` replaces it (a rename, or the
    marker last); one with no files gets an empty data set of ``schema``.
    """
    import os

    import pyarrow.fs as pafs

    staging = _staging_uri(next(iter(locations.values())))
    fs, root, prefix = filesystem(staging)
    files = []
    for value, uris in sources.items():
        fs.create_dir(f"{root}/{value}", recursive=True)
        for number, uri in enumerate(uris):
            _, path, _ = filesystem(uri)
            target = f"{root}/{value}/part-{number:05d}.parquet"
            try:
                if not isinstance(fs, pafs.LocalFileSystem):
                    raise OSError("not a local file system")
                os.link(path, target)
            except OSError:  # another file system, or another device
                fs.copy_file(path, target)
            files.append((value, prefix + target, 0))
    _commit_staged(staging, files, locations, dict.fromkeys(locations, schema))


def _dying_mid_task(pairs: Iterator, task: int, attempt: int) -> Iterator:
    """``pairs``, with the fault point ``mid-task`` (``faults.die_if_armed``) once the writer has
    taken the first: the task has decoded its data and not yet closed its file."""
    for number, pair in enumerate(pairs):
        yield pair
        if number == 0:
            faults.die_if_armed("mid-task", task, attempt)


def _staging_uri(place: str | Path | Uri) -> str:
    """A fresh ``.tmp-*`` sibling of ``place`` as a URI (``file:`` for local paths); remote URIs
    keep their ``scheme://authority``, which ``pathlib`` would fold into ``scheme:/``."""
    text = str(place).rstrip("/")
    if not is_uri(text):
        text = source_uri(text)
    parent, name = text.rsplit("/", 1)
    return f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}"


def _commit_staged(
    staging: str, files: list[tuple[str, str, int]], locations: dict, schemas: dict[str, pa.Schema]
) -> None:
    """Move ``staging/<value>`` to ``locations[value]`` keeping only ``files`` (the successful attempts').

    Where folders rename atomically (``renames_atomically``) each folder is renamed into place. On an
    object store the old data set's marker is deleted first, then its files; the kept files are moved
    (a server-side copy each) and ``COMMIT_MARKER`` is written last: a reader never trusts a half.
    """
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, staging_root, prefix = filesystem(staging)
    for value, place in locations.items():
        staged = f"{staging_root}/{value}"
        keep = {file for v, file, _ in files if v == value}
        fs.create_dir(staged, recursive=True)
        for info in fs.get_file_info(pafs.FileSelector(staged)):
            if prefix + info.path not in keep:  # left by a failed or duplicate task attempt
                fs.delete_file(info.path)
        if not keep:
            pq.write_table(schemas[value].empty_table(), f"{staged}/{EMPTY_FILE}", filesystem=fs)
        _, target, _ = filesystem(place)
        if renames_atomically(place):
            if fs.get_file_info(target).type != pafs.FileType.NotFound:
                fs.delete_dir(target)
            fs.move(staged, target)
            continue
        _uncommit(fs, target)
        for info in fs.get_file_info(pafs.FileSelector(staged)):
            fs.move(info.path, f"{target}/{info.base_name}")
        _write_marker(fs, target)
    fs.delete_dir(staging_root)


def _uncommit(fs, target: str) -> None:
    """Delete an object-store data set at ``target``: its marker first, so that readers stop
    trusting it before any of its files go."""
    import pyarrow.fs as pafs

    if fs.get_file_info(target).type == pafs.FileType.NotFound:
        return
    if fs.get_file_info(f"{target}/{COMMIT_MARKER}").type == pafs.FileType.File:
        fs.delete_file(f"{target}/{COMMIT_MARKER}")
    fs.delete_dir(target)


def _write_marker(fs, target: str) -> None:
    with fs.open_output_stream(f"{target}/{COMMIT_MARKER}") as stream:
        stream.write(b"")


_WRITTEN = pa.schema([("value", pa.string()), ("file", pa.string()), ("rows", pa.int64())])


def _write_task(pairs, name, staging, schemas, row_group_bytes, settings) -> list[dict]:
    """Write one task's (value, batch) pairs to ``staging/<value>/<name>.parquet``, buffering each
    value's batches into row groups of about ``row_group_bytes`` (the last one may be smaller)."""
    import pyarrow.parquet as pq

    fs, root, prefix = filesystem(staging)
    writers, buffers, rows = {}, {}, {}

    def flush(value, last=False):
        table = pa.Table.from_batches(buffers.pop(value), schema=schemas[value])
        per_group = max(1, round(row_group_bytes * table.num_rows / max(table.nbytes, 1)))
        whole = table.num_rows if last else table.num_rows - table.num_rows % per_group
        if whole < table.num_rows:  # keep the rest for the next row group
            buffers[value] = table.slice(whole).to_batches()
        if whole == 0:
            return
        if value not in writers:
            fs.create_dir(f"{root}/{value}", recursive=True)
            writers[value] = pq.ParquetWriter(
                f"{root}/{value}/{name}.parquet", schemas[value], filesystem=fs, **settings[value]
            )
        writers[value].write_table(table.slice(0, whole), row_group_size=per_group)
        rows[value] = rows.get(value, 0) + whole

    for value, batch in pairs:
        if value not in schemas:
            raise ValueError(f"rows for {value!r}, which has no location (expected one of {sorted(schemas)})")
        if batch.num_rows == 0:
            continue
        buffers.setdefault(value, []).append(batch)
        if sum(b.nbytes for b in buffers[value]) >= row_group_bytes:
            flush(value)
    for value in list(buffers):
        flush(value, last=True)
    for writer in writers.values():
        writer.close()
    return [{"value": v, "file": f"{prefix}{root}/{v}/{name}.parquet", "rows": rows[v]} for v in writers]


def _write_empty_parquet(place: str, fields: list) -> None:
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    fs, inner, _ = filesystem(place)
    fs.create_dir(inner, recursive=True)
    pq.write_table(to_arrow_schema(StructType(fields)).empty_table(), f"{inner}/{EMPTY_FILE}", filesystem=fs)


def exists(spark: SparkSession, place: str | Path | Uri) -> bool:
    """Whether ``place`` exists, as Spark's Hadoop libraries see it (ConfigError when they cannot
    reach its scheme: ``missing_hadoop_filesystem``)."""
    path, fs = _hadoop_path(spark, place)
    return bool(fs.exists(path))
