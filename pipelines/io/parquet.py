"""Committed Parquet data sets read from Python: their files, row-group sizes, row groups and
column batches (a data set on an object store counts only with its ``_SUCCESS`` marker).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from pipelines.core.errors import DataError
from pipelines.core.locations import Uri, renames_atomically
from pipelines.io.filesystems import filesystem

# The marker written last into a data set on a file system without atomic rename (object stores).
COMMIT_MARKER = "_SUCCESS"


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


def column_batches(
    location: str | Path | Uri, columns: list[str], optional: tuple[str, ...] = ()
) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of a Parquet data set, batch by batch (only those columns' chunks are read);
    on an object store only a committed one (``COMMIT_MARKER``). Columns named in ``optional`` that
    the data set does not have are left out; any other missing column is DataError."""
    import pyarrow.dataset as ds

    fs, root, _ = filesystem(location)
    _require_committed(fs, root, location)
    dataset = ds.dataset(root, filesystem=fs, format="parquet")
    missing = [name for name in columns if name not in dataset.schema.names]
    required = [name for name in missing if name not in optional]
    if required:
        have = ", ".join(dataset.schema.names)
        raise DataError(str(location), f"has no column {required[0]!r} (it has {have}): re-run what wrote it")
    yield from dataset.to_batches(columns=[name for name in columns if name not in missing])


def _require_committed(fs, root: str, location) -> None:
    """On an object store, a data set whose folder exists must hold ``COMMIT_MARKER``, or, when it is
    made of partition folders (``split=train``, ...) each written as a data set, each of them must:
    without it, its write did not finish (or a replacement is under way) and its files are not to
    be trusted."""
    import pyarrow.fs as pafs

    if renames_atomically(location) or fs.get_file_info(root).type != pafs.FileType.Directory:
        return  # a missing data set fails in the reader as before
    if fs.get_file_info(f"{root}/{COMMIT_MARKER}").type == pafs.FileType.File:
        return
    parts = [info for info in fs.get_file_info(pafs.FileSelector(root)) if not info.base_name.startswith(".")]
    partitioned = parts and all(
        info.type == pafs.FileType.Directory and "=" in info.base_name for info in parts
    )
    if not partitioned or any(
        fs.get_file_info(f"{info.path}/{COMMIT_MARKER}").type != pafs.FileType.File for info in parts
    ):
        raise DataError(
            str(location),
            f"incomplete data set: no {COMMIT_MARKER} marker (its write did not finish; run its stage again)",
        )
