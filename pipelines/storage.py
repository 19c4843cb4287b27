"""I/O helpers at the edges: atomic writes through Hadoop's FileSystem (any Hadoop path) or locally."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession


def _hadoop_path(spark: SparkSession, location: str | Path):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(str(location))
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


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
    (``spark.sql.maxConcurrentOutputFileWriters``, set by ``pipelines.spark``, avoids a sort).
    """
    spark = df.sparkSession
    first = Path(str(next(iter(locations.values()))))
    staging = f"{first.parent}/.tmp-{uuid.uuid4().hex[:8]}-{first.name}"
    writer = df.write.options(**options).mode("overwrite")
    (writer.partitionBy(column) if column else writer).parquet(staging)
    staged_root, fs = _hadoop_path(spark, staging)
    data_columns = [field for field in df.schema.fields if field.name != column]
    for value, location in locations.items():
        staged, _ = _hadoop_path(spark, f"{staging}/{column}={value}" if column else staging)
        if not fs.exists(staged):
            _write_empty_parquet(staged.toString(), data_columns)
        target, _ = _hadoop_path(spark, location)
        if fs.exists(target):
            fs.delete(target, True)
        if not fs.rename(staged, target):
            raise OSError(f"could not move {staged.toString()} to {location}")
    fs.delete(staged_root, True)


def write_from_tasks(
    spark: SparkSession,
    tasks: int,
    produce: Callable[[int], Iterator[tuple[str, pa.RecordBatch]]],
    schema: pa.Schema,
    locations: dict[str, str | Path],
    row_group_bytes: int,
    compression: str = "none",
    plain_columns: tuple[str, ...] = (),
) -> list[tuple[str, str, int]]:
    """Run ``produce(task)`` for task 0..tasks-1 as Spark tasks; each task writes the (value, batch)
    pairs it yields as Parquet straight from its Python worker, then every ``locations[value]`` is
    replaced by its files with a rename (an empty data set where no task wrote that value).

    Rows never cross into the JVM: Spark schedules, retries and reports progress, while the
    bytes go from the worker that computed them to storage (any pyarrow file system). Row groups
    hold about ``row_group_bytes``; ``plain_columns`` (large unique values such as pixels) get no
    dictionary and no statistics. Only the files of successful task attempts are kept.
    Returns (value, file URI, rows) for each file written.
    """
    staging = _staging_uri(next(iter(locations.values())))
    ordinary = [name for name in schema.names if name not in plain_columns]
    settings = dict(compression=compression, use_dictionary=ordinary, write_statistics=ordinary)
    wanted = set(locations)

    def run_tasks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        attempt = TaskContext.get().attemptNumber()
        for batch in batches:
            for task in batch.column("id").to_pylist():
                name = f"part-{task:05d}-{attempt}"
                files = _write_task(produce(task), name, staging, schema, wanted, row_group_bytes, settings)
                yield pa.RecordBatch.from_pylist(files, schema=_WRITTEN)

    from pyspark.sql.pandas.types import from_arrow_schema

    written = spark.range(0, tasks, 1, numPartitions=tasks).mapInArrow(run_tasks, from_arrow_schema(_WRITTEN))
    files = [(row["value"], row["file"], row["rows"]) for row in written.collect()]
    _commit_staged(staging, files, locations, schema)
    return files


def _staging_uri(location: str | Path) -> str:
    """A fresh ``.tmp-*`` sibling of ``location`` as a URI (``file:`` for local paths); remote URIs
    keep their ``scheme://authority``, which ``pathlib`` would fold into ``scheme:/``."""
    text = str(location).rstrip("/")
    if "://" not in text:
        text = source_uri(text)
    parent, name = text.rsplit("/", 1)
    return f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}"


def _commit_staged(
    staging: str, files: list[tuple[str, str, int]], locations: dict, schema: pa.Schema
) -> None:
    """Move ``staging/<value>`` to ``locations[value]`` keeping only ``files`` (the successful attempts')."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, staging_root, prefix = filesystem(staging)
    for value, location in locations.items():
        staged = f"{staging_root}/{value}"
        keep = {file for v, file, _ in files if v == value}
        fs.create_dir(staged, recursive=True)
        for info in fs.get_file_info(pafs.FileSelector(staged)):
            if prefix + info.path not in keep:  # left by a failed or duplicate task attempt
                fs.delete_file(info.path)
        if not keep:
            pq.write_table(schema.empty_table(), f"{staged}/part-00000-empty.parquet", filesystem=fs)
        _, target, _ = filesystem(location)
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            fs.delete_dir(target)
        fs.move(staged, target)
    fs.delete_dir(staging_root)


_WRITTEN = pa.schema([("value", pa.string()), ("file", pa.string()), ("rows", pa.int64())])


def _write_task(pairs, name, staging, schema, wanted, row_group_bytes, settings) -> list[dict]:
    """Write one task's (value, batch) pairs to ``staging/<value>/<name>.parquet``, buffering each
    value's batches into row groups of about ``row_group_bytes`` (the last one may be smaller)."""
    import pyarrow.parquet as pq

    fs, root, prefix = filesystem(staging)
    writers, buffers, rows = {}, {}, {}

    def flush(value, last=False):
        table = pa.Table.from_batches(buffers.pop(value), schema=schema)
        per_group = max(1, round(row_group_bytes * table.num_rows / max(table.nbytes, 1)))
        whole = table.num_rows if last else table.num_rows - table.num_rows % per_group
        if whole < table.num_rows:  # keep the rest for the next row group
            buffers[value] = table.slice(whole).to_batches()
        if whole == 0:
            return
        if value not in writers:
            fs.create_dir(f"{root}/{value}", recursive=True)
            writers[value] = pq.ParquetWriter(
                f"{root}/{value}/{name}.parquet", schema, filesystem=fs, **settings
            )
        writers[value].write_table(table.slice(0, whole), row_group_size=per_group)
        rows[value] = rows.get(value, 0) + whole

    for value, batch in pairs:
        if value not in wanted:
            raise ValueError(f"rows for {value!r}, which has no location (expected one of {sorted(wanted)})")
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


def _write_empty_parquet(location: str, fields: list) -> None:
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    fs, inner, _ = filesystem(location)
    fs.create_dir(inner, recursive=True)
    pq.write_table(
        to_arrow_schema(StructType(fields)).empty_table(), f"{inner}/part-00000-empty.parquet", filesystem=fs
    )


def exists(spark: SparkSession, location: str | Path) -> bool:
    path, fs = _hadoop_path(spark, location)
    return bool(fs.exists(path))


def filesystem(location: str | Path):
    """(pyarrow FileSystem, path inside it, URI prefix) for a local path or a URI (hdfs://, s3://, ...)."""
    import pyarrow.fs as pafs

    text = str(location)
    if "://" not in text:
        local = Path(text.removeprefix("file:")).resolve()
        return pafs.LocalFileSystem(), str(local), "file:"
    fs, inner = pafs.FileSystem.from_uri(text)
    scheme, rest = text.split("://", 1)
    authority = rest.split("/", 1)[0]
    return fs, inner, f"{scheme}://{authority}" if authority else f"{scheme}://"


def source_uri(location: str | Path) -> str:
    """The URI of ``location`` in the form Spark's readers report (``file:/abs/path`` for local paths)."""
    _, inner, prefix = filesystem(location)
    return prefix + inner


def list_files(root: str | Path) -> pa.Table:
    """Every file under ``root`` (recursively) as a table of (``relpath``, ``size``), sorted.

    Listed from Python one folder at a time (local disks with ``os.scandir``, other file systems with
    pyarrow's: HDFS, S3, ...), so memory holds the result (about 60 bytes a file) plus one folder's
    entries. Hidden files are included; the caller decides. Links to files are followed, and so are
    links to folders outside ``root``, each folder once. A link to a folder inside ``root`` (a loop,
    or an alias of a folder listed anyway), a second link to one folder, and a link to nothing are
    listed as entries of size 0 that cannot be read: whoever reads them reports them once, with the
    path, instead of files repeating or silently vanishing.
    """
    fs, base, prefix = filesystem(root)
    if prefix == "file:":
        chunks = _list_local(Path(base))
    else:
        chunks = _list_remote(fs, base, str(root))
    if not chunks:
        return pa.table({"relpath": pa.array([], pa.string()), "size": pa.array([], pa.int64())})
    return pa.concat_tables(chunks).sort_by("relpath").combine_chunks()


def visible_files(listing: pa.Table) -> pa.Table:
    """Drop hidden files and folders (a path part starting with '.' or '_'), as Spark's readers do."""
    relpaths = listing.column("relpath").to_pylist()
    keep = [not any(part[:1] in (".", "_") for part in relpath.split("/")) for relpath in relpaths]
    return listing.filter(pa.array(keep, pa.bool_()))


def file_uris(root: str | Path) -> list[str]:
    """The URI of every file ``list_files`` lists under ``root`` (``root`` itself when it is a file)."""
    import pyarrow.fs as pafs

    relpaths = list_files(root).column("relpath").to_pylist()
    fs, inner, prefix = filesystem(root)
    if fs.get_file_info(inner).type == pafs.FileType.File:
        return [prefix + inner]
    return [f"{prefix}{inner}/{relpath}" for relpath in relpaths]


def _list_local(base: Path) -> list[pa.Table]:
    if not base.exists():
        raise FileNotFoundError(str(base))
    if base.is_file():
        return [pa.table({"relpath": [base.name], "size": [base.stat().st_size]})]
    inside = os.path.realpath(base)
    chunks, folders, visited, cut = [], [str(base)], set(), len(str(base).rstrip("/")) + 1
    while folders:
        folder = folders.pop()
        identity = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        relpaths, sizes = [], []
        if identity in visited:  # a second link to one outside folder: listed, not followed
            chunks.append(pa.table({"relpath": [folder[cut:]], "size": pa.array([0], pa.int64())}))
            continue
        visited.add(identity)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir() and not _link_into(entry, inside):
                    folders.append(entry.path)
                elif entry.is_file() or entry.is_symlink():  # a dangling link or a link into the tree
                    relpaths.append(entry.path[cut:])
                    sizes.append(entry.stat().st_size if entry.is_file() else 0)
        if relpaths:
            chunks.append(pa.table({"relpath": relpaths, "size": pa.array(sizes, pa.int64())}))
    return chunks


def _link_into(entry: os.DirEntry, inside: str) -> bool:
    """Whether ``entry`` is a link to a folder inside ``inside`` (a loop, or an alias of a folder
    that is listed anyway): following it would list files twice or forever."""
    if not entry.is_symlink():
        return False
    target = os.path.realpath(entry.path)
    return target == inside or target.startswith(inside.rstrip(os.sep) + os.sep)


def _list_remote(fs, base: str, root: str) -> list[pa.Table]:
    import pyarrow.fs as pafs

    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(root)
    if info.type == pafs.FileType.File:
        return [pa.table({"relpath": [info.base_name], "size": [info.size]})]
    chunks, folders, cut = [], [base], len(base.rstrip("/")) + 1
    while folders:
        entries = fs.get_file_info(pafs.FileSelector(folders.pop(), recursive=False))
        files = [e for e in entries if e.type == pafs.FileType.File]
        folders.extend(e.path for e in entries if e.type == pafs.FileType.Directory)
        if files:
            chunks.append(
                pa.table({"relpath": [e.path[cut:] for e in files], "size": [e.size for e in files]})
            )
    return chunks


def open_input(uri: str):
    """A binary stream of the file at ``uri`` (local or any pyarrow file system), on any node."""
    if uri.startswith("file:"):
        return open(uri.removeprefix("file:"), "rb")
    fs, inner, _ = filesystem(uri)
    return fs.open_input_stream(inner)


def read_bytes(uri: str) -> bytes:
    """The whole content of the file at ``uri``."""
    with open_input(uri) as stream:
        return stream.read()


def first_invalid_utf8(uri: str, chunk_bytes: int = 1 << 20) -> int | None:
    """The byte offset of the first byte of ``uri`` that is not valid UTF-8, or None; read in chunks."""
    import codecs

    decoder, consumed = codecs.getincrementaldecoder("utf-8")(), 0
    with open_input(uri) as stream:
        while chunk := stream.read(chunk_bytes):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:  # err.object: the bytes held back from before + chunk
                return consumed - (len(err.object) - len(chunk)) + err.start
            consumed += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:  # a sequence cut off by the end of the file
            return consumed - len(err.object) + err.start
    return None


def data_files(location: str | Path) -> list[str]:
    """The URIs of a Parquet data set's files, sorted (hidden and ``_`` files left out), from a listing."""
    import pyarrow.dataset as ds

    fs, root, prefix = filesystem(location)
    return sorted(prefix + path for path in ds.dataset(root, filesystem=fs, format="parquet").files)


def row_group_sizes(location: str | Path) -> list[int]:
    """Rows in each Parquet row group of a data set, in the sorted file order Petastorm shards by.

    Read from the files' footers only, never from the data.
    """
    import pyarrow.dataset as ds

    fs, root, _ = filesystem(location)
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


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(staging)`` beside ``path`` (same name ending, e.g. ``.keras``), then rename it into
    place: readers (a resume, a serving job) see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    write(staging)
    os.replace(staging, path)


def write_npz_atomically(path: Path, **arrays) -> None:
    """Write arrays as one .npz file, atomically (``write_atomically``)."""
    import numpy as np

    def savez(staging: Path) -> None:
        with open(staging, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, savez)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
