"""Incremental ingest: what changed in ``data.source`` since the last ingest, and the snapshots
that say which file's record lives in which data file.

A snapshot (``Catalog.snapshot``) lists every file ingested, with its size and modification time
as listed, and the Parquet file that holds its row (a split's or the quarantine's); a file of many
records (text) has one row per data file holding some of them, and a null ``part`` when it holds
none. The next ingest
lists the source again and compares (``difference``): new and changed files are read, the rows of
changed and removed ones are dropped from their data files (``drop_rows``), everything else stays
as written. Many small increments are merged (``compact``) so that night 300 reads as night 1.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.catalog import Catalog
from pipelines.core.errors import DataError
from pipelines.core.locations import Location
from pipelines.io import atomic, filesystems, parquet

# ``part`` is dictionary-encoded: a few hundred data files hold millions of rows.
PART = pa.dictionary(pa.int32(), pa.string())
SNAPSHOT = pa.schema([("relpath", pa.string()), ("size", pa.int64()), ("mtime", pa.int64()), ("part", PART)])


@dataclass(frozen=True)
class Difference:
    """A listing against the last snapshot: the files to read and the rows to drop."""

    to_read: pa.Table  # listing rows (relpath, size, mtime) of the added and changed files
    dropped: dict[str, list[str]]  # data file -> relpaths whose rows go (changed and removed files)
    added: int
    changed: int
    removed: int
    unchanged: int

    @property
    def description(self) -> str:
        return (
            f"{self.added} new, {self.changed} changed, {self.removed} removed and "
            f"{self.unchanged} unchanged files"
        )


def summary(number: int, change: Difference | None, read: int, written: list, merged: int) -> dict:
    """An ingest's share for its report: increment ``number`` (``whole``: everything was read), the
    files ``read``, the rows of the files ``written`` ((value, URI, rows); "unusable": quarantined)
    and the files ``merged``."""
    return {
        "number": number,
        "whole": change is None,
        "files_read": read,
        "rows_written": sum(rows for value, _, rows in written if value != "unusable"),
        "rows_quarantined": sum(rows for value, _, rows in written if value == "unusable"),
        "added": change.added if change else read,
        "changed": change.changed if change else 0,
        "removed": change.removed if change else 0,
        "unchanged": change.unchanged if change else 0,
        "files_merged": merged,
    }


def difference(listing: pa.Table, snapshot: pa.Table) -> Difference:
    """Compare ``listing`` (relpath, size, mtime) with ``snapshot`` by path, size and modification
    time: a file is added (not in the snapshot), changed (either differs), removed (not listed) or
    unchanged. The rows of a changed or removed file go from every data file that holds some."""
    files = snapshot.group_by("relpath").aggregate([("size", "max"), ("mtime", "max")])
    before = files.select(["relpath", "size_max", "mtime_max"]).rename_columns(
        ["relpath", "size_before", "mtime_before"]
    )
    joined = listing.select(["relpath", "size", "mtime"]).join(before, "relpath", join_type="full outer")
    listed, known = pc.is_valid(joined["size"]), pc.is_valid(joined["size_before"])
    same = pc.and_(
        pc.equal(joined["size"], joined["size_before"]), pc.equal(joined["mtime"], joined["mtime_before"])
    )
    both = pc.and_(listed, known)
    changed = pc.and_(both, pc.invert(pc.fill_null(same, False)))
    added, removed = pc.and_(listed, pc.invert(known)), pc.and_(known, pc.invert(listed))
    to_read = joined.filter(pc.or_(added, changed)).select(["relpath", "size", "mtime"]).sort_by("relpath")
    gone = joined.filter(pc.or_(changed, removed))["relpath"]
    held = snapshot.filter(
        pc.and_(pc.is_in(snapshot["relpath"], value_set=gone), pc.is_valid(snapshot["part"]))
    )
    dropped: dict[str, list[str]] = {}
    for relpath, part in zip(held["relpath"].to_pylist(), held["part"].to_pylist(), strict=True):
        dropped.setdefault(part, []).append(relpath)
    return Difference(
        to_read, dropped, _count(added), _count(changed), _count(removed), _count(pc.and_(both, same))
    )


def _count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(mask).as_py() or 0)


def last_snapshot(catalog: Catalog, facts: dict, locations: Iterable) -> pa.Table | None:
    """The newest snapshot, reconciled with the data files at ``locations`` (``reconciled``), when
    the last ingest's report holds ``facts`` (the source, and the settings that decide what it wrote)
    and its data sets are there; None: ingest everything."""
    try:
        report = atomic.read_json(catalog.ingest_report)
    except (OSError, ValueError):
        return None
    latest = latest_snapshot(catalog) if all(report.get(k) == v for k, v in facts.items()) else None
    try:
        files = {uri for place in locations for uri in parquet.data_files(place)}
    except (OSError, DataError):
        return None
    return reconciled(latest[1], files) if latest is not None else None


def apply_change(
    change: Difference,
    number: int,
    locations: Iterable,
    options: dict,
    compaction: tuple[int, int, int],
    relpath_of: Callable[[pa.Table], pa.Array] | None = None,
) -> int:
    """Drop the rows of increment ``number``'s changed and removed files from the data files holding
    them (``drop_rows``, files written with ``options``), then merge the small files of each data set
    at ``locations`` (``compact``; ``compaction``: its small_rows, most and rows_per_group). Returns
    the number of files merged."""
    # Names never seen before (numbers start again after --force): preprocess knows a data file by it.
    tag = uuid.uuid4().hex[:8]
    for index, (part, relpaths) in enumerate(sorted(change.dropped.items())):
        drop_rows(part, relpaths, f"i{number:05d}-r{index:05d}-{tag}.parquet", options, relpath_of)
    small_rows, most, rows_per_group = compaction
    merged = 0
    for place in locations:
        name = f"i{number:05d}-merged-{tag}.parquet"
        result = compact(place, small_rows, most, name, rows_per_group, options)
        merged += len(result[0]) if result else 0
    return merged


def reconciled(snapshot: pa.Table, files: set[str]) -> pa.Table:
    """``snapshot`` against the data ``files`` there now, after an ingest that did not finish:
    files an increment wrote that no snapshot knows are deleted, and the rows of data files that are
    gone are left out of the snapshot, so that their source files are read again. A source file
    that kept some of its records (in another data file) counts as changed: the kept ones are
    dropped and the file is read again whole."""
    for uri in files - _known_parts(snapshot):
        if uri.rsplit("/", 1)[1].startswith("i"):  # named by an increment (``i00003-...``)
            fs, path, _ = filesystems.filesystem(uri)
            fs.delete_file(path)
    kept = _rows_in(snapshot, files)
    present = pa.array(sorted(files), pa.string())
    gone = pc.and_(pc.is_valid(snapshot["part"]), pc.invert(pc.is_in(snapshot["part"], value_set=present)))
    lost = snapshot.filter(gone)["relpath"]
    partial = pc.is_in(kept["relpath"], value_set=lost)  # no size is -1: the file reads as changed
    return kept.set_column(kept.schema.get_field_index("size"), "size", pc.if_else(partial, -1, kept["size"]))


def current_parts(
    snapshot: pa.Table | None, files: list[str], read: Callable[[Iterable[str]], pa.Table] | None = None
) -> pa.Table:
    """(relpath, part) of every row of the data ``files`` there now: from ``snapshot`` for the files
    it knows (a data file is never changed in place: a rewritten or merged one has a new name),
    from the files themselves (``read``, default ``parts_of``) for the others (new, rewritten, merged)."""
    read = read or parts_of
    if snapshot is None:
        return read(files)
    known = _known_parts(snapshot)
    kept = _rows_in(snapshot, set(files)).select(["relpath", "part"])
    kept = kept.filter(pc.is_valid(kept["part"]))
    return pa.concat_tables([kept, read(uri for uri in files if uri not in known)])


def _known_parts(snapshot: pa.Table) -> set[str]:
    return set(pc.unique(snapshot["part"]).to_pylist()) - {None}


def _rows_in(snapshot: pa.Table, files: set[str]) -> pa.Table:
    """The rows of ``snapshot`` held by one of ``files``."""
    present = pa.array(sorted(files & _known_parts(snapshot)), pa.string())
    held = pc.is_in(snapshot["part"], value_set=present)
    return snapshot.filter(pc.or_(held, pc.is_null(snapshot["part"])))


def latest_snapshot(catalog: Catalog) -> tuple[int, pa.Table] | None:
    """The number and the table of the newest snapshot, or None when there is none."""
    numbers = snapshot_numbers(catalog)
    if not numbers:
        return None
    import pyarrow.parquet as pq

    content = filesystems.read_bytes(str(catalog.snapshot(numbers[-1])))
    return numbers[-1], pq.read_table(io.BytesIO(content)).cast(SNAPSHOT)


def forget_snapshots(catalog: Catalog) -> None:
    """Delete every snapshot: the next ingest reads the whole source (``--force``)."""
    fs, root, _ = filesystems.filesystem(catalog.snapshots)
    fs.delete_dir_contents(root, missing_dir_ok=True)


def snapshot_numbers(catalog: Catalog) -> list[int]:
    """The numbers of the snapshots kept, oldest first."""
    import pyarrow.fs as pafs

    fs, root, _ = filesystems.filesystem(catalog.snapshots)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = [info.base_name for info in infos if info.type == pafs.FileType.File]
    return sorted(int(name[1:-8]) for name in names if name.startswith("i") and name.endswith(".parquet"))


def record_snapshot(
    catalog: Catalog, number: int, listing: pa.Table, parts: pa.Table, records_per_file: bool = False
) -> pa.Table:
    """Write snapshot ``number``: each listed file with the data file holding its row (``parts``:
    relpath, part). Raises DataError when a file has no row or several (nothing may be lost).
    ``records_per_file``: a file holds any number of records (text), in any number of data files
    (one snapshot row each; none: a null part); a row of a file not listed is still an error."""
    import pyarrow.parquet as pq

    parts = parts.combine_chunks().unify_dictionaries()  # the join takes one dictionary
    if records_per_file:
        parts = parts.group_by(["relpath", "part"]).aggregate([])  # one row per (file, data file)
        stray = pc.invert(pc.is_in(parts["relpath"], value_set=listing["relpath"]))
        if pc.any(stray).as_py():
            example = parts.filter(stray)["relpath"][0].as_py()
            raise DataError(str(catalog.ingested), f"holds records of {example}, which is no longer listed")
    joined = listing.select(["relpath", "size", "mtime"]).join(parts, "relpath", join_type="left outer")
    lost = not records_per_file and (
        joined.num_rows != listing.num_rows or joined["part"].null_count or parts.num_rows != listing.num_rows
    )
    if lost:
        raise DataError(
            str(catalog.ingested),
            f"{listing.num_rows} files listed, {parts.num_rows} rows hold them"
            f" ({joined['part'].null_count} files without a row)",
        )
    snapshot = joined.sort_by("relpath").cast(SNAPSHOT)
    buffer = io.BytesIO()
    pq.write_table(snapshot, buffer, compression="zstd")
    atomic.write_bytes_atomically(buffer.getvalue(), str(catalog.snapshot(number)))
    return snapshot


def parts_of(files: Iterable[str]) -> pa.Table:
    """(relpath, part) of every row of the data ``files``, from their relpath column alone."""
    import pyarrow.parquet as pq

    tables = []
    for uri in files:
        fs, path, _ = filesystems.filesystem(uri)
        relpaths = pq.read_table(path, columns=["relpath"], filesystem=fs).column("relpath")
        part = pa.DictionaryArray.from_arrays(np.zeros(len(relpaths), np.int32), [uri])
        tables.append(pa.table({"relpath": relpaths, "part": part}))
    if not tables:
        return pa.table({"relpath": pa.array([], pa.string()), "part": pa.array([], PART)})
    return pa.concat_tables(tables).unify_dictionaries()


def drop_rows(
    part: str,
    relpaths: list[str],
    name: str,
    settings: dict,
    relpath_of: Callable[[pa.Table], pa.Array] | None = None,
) -> str | None:
    """Rewrite the data file ``part`` without the rows of ``relpaths``, as ``name`` beside it (row
    group by row group: memory holds one), and delete it. Returns the new file's URI, or None
    when no row is left. ``relpath_of``: each row's relpath from a row group (default: its column)."""
    import pyarrow.parquet as pq

    fs, path, prefix = filesystems.filesystem(part)
    target = f"{path.rsplit('/', 1)[0]}/{name}"
    gone = pa.array(relpaths, pa.string())
    written = 0
    with fs.open_input_file(path) as handle:
        source = pq.ParquetFile(handle)
        writer = None
        for index in range(source.num_row_groups):
            group = source.read_row_group(index)
            relpath = relpath_of(group) if relpath_of else group["relpath"]
            kept = group.filter(pc.invert(pc.is_in(relpath, value_set=gone)))
            if kept.num_rows:
                writer = writer or pq.ParquetWriter(target, source.schema_arrow, filesystem=fs, **settings)
                writer.write_table(kept)
                written += kept.num_rows
        if writer:
            writer.close()
    fs.delete_file(path)
    return prefix + target if written else None


def compact(
    location: Location, small_rows: int, most: int, name: str, rows_per_group: int, settings: dict
) -> tuple[list[str], str] | None:
    """Merge the files of the data set at ``location`` holding fewer than ``small_rows`` rows into
    one file ``name``, in row groups of ``rows_per_group`` rows, when there are more than ``most``
    of them. Returns (merged file URIs, the new file's URI), or None when nothing was merged."""
    import pyarrow.parquet as pq

    sizes = {uri: sum(parquet.row_group_sizes(uri)) for uri in parquet.data_files(location)}
    small = [uri for uri, rows in sizes.items() if rows < small_rows]
    if len(small) <= most:
        return None
    fs, root, prefix = filesystems.filesystem(location)
    target = f"{root}/{name}"
    writer, held = None, []
    for uri in small:
        _, path, _ = filesystems.filesystem(uri)
        with fs.open_input_file(path) as handle:
            source = pq.ParquetFile(handle)
            writer = writer or pq.ParquetWriter(target, source.schema_arrow, filesystem=fs, **settings)
            for index in range(source.num_row_groups):
                held.append(source.read_row_group(index))
                while sum(table.num_rows for table in held) >= rows_per_group:
                    table = pa.concat_tables(held)
                    writer.write_table(table.slice(0, rows_per_group), row_group_size=rows_per_group)
                    held = [table.slice(rows_per_group)]
    if held and sum(table.num_rows for table in held):
        writer.write_table(pa.concat_tables(held), row_group_size=rows_per_group)
    writer.close()
    for uri in small:
        fs.delete_file(filesystems.filesystem(uri)[1])
    return small, prefix + target
