"""File systems and listings: pyarrow's file system for any location (S3 settings from the
environment), recursive listings as Arrow tables, and reading single files.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.core.errors import ConfigError, DataError
from pipelines.core.locations import Uri, is_uri, local_part

S3_SCHEMES = ("s3", "s3a", "s3n")


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
        return pafs.LocalFileSystem(), str(Path(local_part(text)).resolve()), "file:"
    scheme, rest = text.split("://", 1)
    authority, _, path = rest.partition("/")
    if scheme.lower() in S3_SCHEMES:
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


def list_files(root: str | Path) -> pa.Table:
    """Every file under ``root`` (recursively) as a table of (``relpath``, ``size``, ``mtime``: its
    modification time in ns, 0 where the file system has none), sorted.

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
        return _listed([], [], [])
    return pa.concat_tables(chunks).sort_by("relpath").combine_chunks()


def _listed(relpaths: list[str], sizes: list[int], mtimes: list[int]) -> pa.Table:
    return pa.table(
        {
            "relpath": pa.array(relpaths, pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "mtime": pa.array(mtimes, pa.int64()),
        }
    )


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
        return [_listed([base.name], [base.stat().st_size], [base.stat().st_mtime_ns])]
    inside = os.path.realpath(base)
    chunks, folders, visited, cut = [], [str(base)], set(), len(str(base).rstrip("/")) + 1
    while folders:
        folder = folders.pop()
        identity = (os.stat(folder).st_dev, os.stat(folder).st_ino)
        relpaths, sizes, mtimes = [], [], []
        if identity in visited:  # a second link to one outside folder: listed, not followed
            chunks.append(_listed([folder[cut:]], [0], [0]))
            continue
        visited.add(identity)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir() and not _link_into(entry, inside):
                    folders.append(entry.path)
                elif entry.is_file() or entry.is_symlink():  # a dangling link or a link into the tree
                    relpaths.append(entry.path[cut:])
                    stat = entry.stat() if entry.is_file() else None
                    sizes.append(stat.st_size if stat else 0)
                    mtimes.append(stat.st_mtime_ns if stat else 0)
        if relpaths:
            chunks.append(_listed(relpaths, sizes, mtimes))
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
        return [_listed([info.base_name], [info.size], [info.mtime_ns or 0])]
    chunks, folders, cut = [], [base], len(base.rstrip("/")) + 1
    while folders:
        entries = fs.get_file_info(pafs.FileSelector(folders.pop(), recursive=False))
        files = [e for e in entries if e.type == pafs.FileType.File]
        folders.extend(e.path for e in entries if e.type == pafs.FileType.Directory)
        if files:
            chunks.append(
                _listed(
                    [e.path[cut:] for e in files], [e.size for e in files], [e.mtime_ns or 0 for e in files]
                )
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


def is_file(path: str | Path | Uri) -> bool:
    """Whether ``path`` is a file, local or on any pyarrow file system."""
    import pyarrow.fs as pafs

    if not is_uri(path):
        return Path(local_part(str(path))).is_file()
    fs, inner, _ = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.File


def source_uri(location: str | Path) -> str:
    """The URI of ``location`` in the form Spark's readers report (``file:/abs/path`` for local paths)."""
    _, inner, prefix = filesystem(location)
    return prefix + inner
