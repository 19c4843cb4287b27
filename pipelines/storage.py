"""The one storage layer: every location the pipelines read or write, local or a URI, goes through here.

A location is a local path (``Path``, or a ``file:`` URI) or a URI of another file system (``Uri``:
``s3://``, ``s3a://``, ``hdfs://``, ``gs://``, ...). Python code reaches them with pyarrow's file
systems (``filesystem``), Spark with Hadoop's (the same URI string).

Atomic replacement, by file system (``renames_atomically``):

- local disks and shared mounts, HDFS (``hdfs://``, ``viewfs://``): write beside the target, then
  one rename. Readers see the old data set or file, or the new one, never half.
- object stores (``s3://``/``s3a://``, ``gs://``, ``abfs://``, ...), where a folder "rename" is a copy
  of every object: a data set is committed by a ``_SUCCESS`` marker written last (``COMMIT_MARKER``),
  removed first when it is replaced; ``data_files`` and ``row_group_sizes`` refuse a data set
  without it. A single file (a JSON record) is one PUT, which object stores apply atomically per
  object: readers see the old content or the new, never half.

S3 endpoints: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server such as MinIO),
``AWS_REGION``/``AWS_DEFAULT_REGION`` and the usual credential variables are read from the environment
of the process that opens the file system, Spark's Python workers included: in local mode they inherit
the driver's environment; on a cluster set them with ``spark.executorEnv.NAME``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines import faults
from pipelines.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The marker written last into a data set on a file system without atomic rename (object stores).
COMMIT_MARKER = "_SUCCESS"
# Schemes whose rename of a folder is one atomic operation; every other remote scheme is treated
# as an object store (commit marker).
_RENAMING_SCHEMES = ("file", "hdfs", "viewfs")
_S3_SCHEMES = ("s3", "s3a", "s3n")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Uri:
    """A location on a file system reached by URI (``s3://bucket/key``, ``hdfs://namenode/path``).

    Joined with ``/`` and named like a ``Path`` (``name``, ``parent``, ``with_name``), but never
    resolved against the local disk: ``Path("s3://b/w")`` would be ``s3:/b/w``. ``os.fspath`` refuses
    it, so code that needs a local file fails loudly instead of writing to a folder named ``s3:``.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        scheme, rest = str(text).split("://", 1)
        authority, _, path = rest.partition("/")
        path = "/".join(part for part in path.split("/") if part)
        self.text = f"{scheme}://{authority}/{path}" if path else f"{scheme}://{authority}"

    def __truediv__(self, part: str) -> Uri:
        return Uri(f"{self.text}/{part}")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Uri({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Uri) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def scheme(self) -> str:
        return self.text.split("://", 1)[0]

    @property
    def name(self) -> str:
        head, _, tail = self.text.rpartition("/")
        return "" if head.endswith(":/") else tail  # the root (scheme://authority) has no name

    @property
    def parent(self) -> Uri:
        return self if not self.name else Uri(self.text.rsplit("/", 1)[0])

    def with_name(self, name: str) -> Uri:
        return self.parent / name

    def resolve(self) -> Uri:
        """A URI is absolute already (``Path.resolve``'s counterpart)."""
        return self


# Where a data set or file lives: a local path or a URI.
Location = Path | Uri


def is_uri(location: str | Path | Uri) -> bool:
    """Whether ``location`` is on a file system other than the local one (``file:`` URIs are local)."""
    if isinstance(location, Uri):
        return True
    match = _URI.match(str(location)) if isinstance(location, str) else None
    return bool(match) and match.group(1).lower() != "file"


def location(text: str | Path | Uri) -> Path | Uri:
    """``text`` as a ``Uri`` when it names another file system, else as an absolute local ``Path``
    (``file:/x`` and ``file:///x`` are ``/x``)."""
    if is_uri(text):
        return text if isinstance(text, Uri) else Uri(text)
    return Path(_local_part(str(text))).resolve()


def _local_part(text: str) -> str:
    if text.startswith("file://"):
        return text.removeprefix("file://")  # file:///x -> /x (file://host/x is not supported)
    return text.removeprefix("file:")


def require_local(where: str | Path | Uri, needs: str) -> Path:
    """``where`` as a local ``Path``, or one ConfigError line saying that ``needs`` (what keeps its
    files there) needs a local path or a shared mount, not a URI."""
    if is_uri(where):
        raise ConfigError(
            "workdir",
            f"{where} is a URI, but {needs} needs a local path or a shared mount (NFS, ...); "
            "data.source may be a URI",
        )
    return Path(_local_part(str(where)))


def renames_atomically(location: str | Path | Uri) -> bool:
    """Whether a folder at ``location`` is replaced by one atomic rename (local, shared mounts, HDFS);
    False for object stores, where data sets are committed by ``COMMIT_MARKER`` instead."""
    match = _URI.match(str(location))
    return not match or match.group(1).lower() in _RENAMING_SCHEMES


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
    match = _URI.match(where)
    scheme = match.group(1).lower() if match else where.split(":", 1)[0]
    if scheme in _S3_SCHEMES:
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
    (``spark.sql.maxConcurrentOutputFileWriters``, set by ``pipelines.spark``, avoids a sort).
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
    replaced by its files (an empty data set where no task wrote that value): with a rename, or on
    object stores by moving the files and writing ``COMMIT_MARKER`` last (``_commit_staged``).

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
                pairs = _dying_mid_task(produce(task), task, attempt)
                files = _write_task(pairs, name, staging, schema, wanted, row_group_bytes, settings)
                yield pa.RecordBatch.from_pylist(files, schema=_WRITTEN)

    from pyspark.sql.pandas.types import from_arrow_schema

    written = spark.range(0, tasks, 1, numPartitions=tasks).mapInArrow(run_tasks, from_arrow_schema(_WRITTEN))
    files = [(row["value"], row["file"], row["rows"]) for row in written.collect()]
    _commit_staged(staging, files, locations, schema)
    return files


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
    staging: str, files: list[tuple[str, str, int]], locations: dict, schema: pa.Schema
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
            pq.write_table(schema.empty_table(), f"{staged}/part-00000-empty.parquet", filesystem=fs)
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


def _write_empty_parquet(place: str, fields: list) -> None:
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    fs, inner, _ = filesystem(place)
    fs.create_dir(inner, recursive=True)
    pq.write_table(
        to_arrow_schema(StructType(fields)).empty_table(), f"{inner}/part-00000-empty.parquet", filesystem=fs
    )


def exists(spark: SparkSession, place: str | Path | Uri) -> bool:
    """Whether ``place`` exists, as Spark's Hadoop libraries see it (ConfigError when they cannot
    reach its scheme: ``missing_hadoop_filesystem``)."""
    path, fs = _hadoop_path(spark, place)
    return bool(fs.exists(path))


def filesystem(place: str | Path | Uri):
    """(pyarrow FileSystem, path inside it, URI prefix) for a local path or a URI.

    ``s3://``, ``s3a://`` and ``s3n://`` (Hadoop's names) all open pyarrow's S3 file system, set from
    the environment (see the module); other schemes (``hdfs://`` through libhdfs, ``gs://``, ...)
    are pyarrow's own. The prefix keeps the scheme given, so URIs handed back to Spark stay valid;
    prefix + path is the URI (object stores' paths start with the bucket: their prefix is ``s3://``).
    """
    import pyarrow.fs as pafs

    text = str(place)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(_local_part(text)).resolve()), "file:"
    scheme, rest = text.split("://", 1)
    authority, _, path = rest.partition("/")
    if scheme.lower() in _S3_SCHEMES:
        if not authority:
            raise ConfigError(text, "an S3 URI needs a bucket (s3://BUCKET/path)")
        inner = f"{authority}/{path}".rstrip("/")
        return (
            _s3(authority, *(os.environ.get(name) for name in _S3_ENVIRONMENT)),
            inner,
            f"{scheme}://",
        )
    fs, inner = pafs.FileSystem.from_uri(text)
    in_path = authority and (inner == authority or inner.startswith(f"{authority}/"))  # gs://bucket/...
    return fs, inner, f"{scheme}://" if in_path or not authority else f"{scheme}://{authority}"


# What configures S3 access, read from the environment each time (a changed value opens a new client).
_S3_ENVIRONMENT = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


@lru_cache(maxsize=32)
def _s3(bucket: str, endpoint_s3, endpoint, region, default_region, key, secret, token, profile):
    """One S3 client per bucket and settings in each process (a client per file would cost a
    connection and, without a region, a region lookup each time)."""
    import pyarrow.fs as pafs

    options: dict[str, Any] = {}
    url = endpoint_s3 or endpoint
    if url:  # an S3-compatible server (MinIO, Ceph, moto)
        scheme, _, host = url.rpartition("://")
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    if key and secret:
        options.update(access_key=key, secret_key=secret, session_token=token)
    region = region or default_region
    if region:
        options["region"] = region
    elif not url:  # AWS itself: the bucket's own region (one lookup per bucket and process)
        options["region"] = pafs.resolve_s3_region(bucket)
    else:
        options["region"] = "us-east-1"
    return pafs.S3FileSystem(**options)


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


def list_source(source: str | Path) -> pa.Table:
    """``list_files`` of a pipeline's ``data.source``.

    Raises:
        DataError: naming ``source`` when it does not exist.
    """
    try:
        return list_files(source)
    except FileNotFoundError:
        raise DataError(str(source), "data.source does not exist") from None


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


def data_files(location: str | Path | Uri) -> list[str]:
    """The URIs of a Parquet data set's files, sorted (hidden and ``_`` files left out), from a listing.

    On an object store only a committed data set (``COMMIT_MARKER``) is read; DataError otherwise."""
    import pyarrow.dataset as ds

    fs, root, prefix = filesystem(location)
    _require_committed(fs, root, location)
    return sorted(prefix + path for path in ds.dataset(root, filesystem=fs, format="parquet").files)


def row_group_sizes(location: str | Path | Uri) -> list[int]:
    """Rows in each Parquet row group of a data set, in the sorted file order Petastorm shards by.

    Read from the files' footers only, never from the data. On an object store only a committed
    data set (``COMMIT_MARKER``) is read; DataError otherwise.
    """
    import pyarrow.dataset as ds

    fs, root, _ = filesystem(location)
    _require_committed(fs, root, location)
    dataset = ds.dataset(root, filesystem=fs, format="parquet", exclude_invalid_files=True)
    fragments = sorted(dataset.get_fragments(), key=lambda fragment: fragment.path)
    return [group.num_rows for fragment in fragments for group in fragment.row_groups]


def row_groups(location: str | Path | Uri, shard: int = 0, shards: int = 1) -> Iterator[pa.Table]:
    """Every ``shards``-th row group of a Parquet data set from the ``shard``-th, in the sorted file
    order of ``row_group_sizes``; on an object store only a committed one (``COMMIT_MARKER``)."""
    import pyarrow.dataset as ds

    fs, root, _ = filesystem(location)
    _require_committed(fs, root, location)
    dataset = ds.dataset(root, filesystem=fs, format="parquet", exclude_invalid_files=True)
    fragments = sorted(dataset.get_fragments(), key=lambda fragment: fragment.path)
    groups = [group for fragment in fragments for group in fragment.split_by_row_group()]
    for group in groups[shard::shards]:
        yield group.to_table()


def column_batches(location: str | Path | Uri, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of a Parquet data set, batch by batch (only those columns' chunks are read);
    on an object store only a committed one (``COMMIT_MARKER``)."""
    import pyarrow.dataset as ds

    fs, root, _ = filesystem(location)
    _require_committed(fs, root, location)
    yield from ds.dataset(root, filesystem=fs, format="parquet").to_batches(columns=columns)


def _require_committed(fs, root: str, location) -> None:
    """On an object store, a data set whose folder exists must hold ``COMMIT_MARKER``: without it, its
    write did not finish (or a replacement is under way) and its files are not to be trusted."""
    import pyarrow.fs as pafs

    if renames_atomically(location) or fs.get_file_info(root).type != pafs.FileType.Directory:
        return  # a missing data set fails in the reader as before
    if fs.get_file_info(f"{root}/{COMMIT_MARKER}").type != pafs.FileType.File:
        raise DataError(
            str(location),
            f"incomplete data set: no {COMMIT_MARKER} marker (its write did not finish; run its stage again)",
        )


def write_json_atomically(data: dict[str, Any], path: str | Path | Uri) -> None:
    """Write JSON so that readers see the old or the new content, never half: locally (and on
    shared mounts) a temporary sibling renamed into place; on a URI through ``write_bytes_atomically``."""
    if is_uri(path):
        write_bytes_atomically(json.dumps(data, indent=2, sort_keys=True).encode(), path)
        return
    path = Path(_local_part(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_bytes_atomically(content: bytes, uri: str | Uri) -> None:
    """Replace the file at ``uri`` (any pyarrow file system) so that readers see the old content or the
    new: where renames are atomic (HDFS), a temporary sibling renamed into place; on an object store
    one PUT of the whole object, which the store applies atomically."""
    fs, inner, _ = filesystem(uri)
    parent, _, name = inner.rpartition("/")
    fs.create_dir(parent, recursive=True)
    target = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}" if renames_atomically(uri) else inner
    with fs.open_output_stream(target) as stream:
        stream.write(content)
    if target != inner:
        fs.move(target, inner)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(staging)`` beside ``path`` (same name ending, e.g. ``.keras``), then rename it into
    place: readers (a resume, a serving job) see the old file or the new one, never half.
    Local files only (checkpoints, models: Keras and numpy write them to a local path)."""
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


def read_json(path: str | Path | Uri) -> dict[str, Any]:
    """The JSON file at ``path``, local or on any pyarrow file system."""
    if is_uri(path):
        return json.loads(read_bytes(str(path)))
    return json.loads(Path(_local_part(str(path))).read_text())


def is_file(path: str | Path | Uri) -> bool:
    """Whether ``path`` is a file, local or on any pyarrow file system."""
    import pyarrow.fs as pafs

    if not is_uri(path):
        return Path(_local_part(str(path))).is_file()
    fs, inner, _ = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.File
