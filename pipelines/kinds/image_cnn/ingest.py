"""Ingest stage: a class-per-folder image tree -> decoded, resized RGB pixels in Parquet.

The driver lists the files (names and sizes only) and writes the listing in parts; each Spark task
takes one part, reads its files itself where it decodes them, in batches sized in bytes, and writes
the records to Parquet itself (``spark_writes.write_from_tasks``), each usable one already into its
split's folder (the stable hash split of ``preprocess.split``), in the row groups the ranks stream:
preprocess then publishes these files as the splits without reading a pixel again. No file content or
pixel crosses the JVM/Python boundary, none goes through a shuffle and nothing is cached: memory does
not grow with the number of files. Files that cannot be used go to
the quarantine folder with the reason, in the same single pass, and every run checks files seen =
rows written + rows quarantined, counted from the written files' footers. An ingest that reads few
files (``ingest.driver_increment_files``, and at most ``ingest.task_bytes``: a small increment, or a
small data set's first ingest) runs its tasks in the driver, and Spark is not started.
"""

from __future__ import annotations

import io
import logging
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from pyspark.sql import SparkSession

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import PreprocessConfig, SplitConfig
from pipelines.core.errors import DataError
from pipelines.ingest import increments
from pipelines.ingest.accounting import check_accounted
from pipelines.io import atomic, filesystems, parquet, retention, spark_writes
from pipelines.kinds.image_cnn.config import ImagePipelineConfig, IngestConfig
from pipelines.kinds.image_cnn.schemas import IMAGE_RECORDS
from pipelines.preprocess.profile import band
from pipelines.preprocess.splits import split_names
from pipelines.runtime.progress import stage_progress
from pipelines.runtime.spark import planned_cores

log = logging.getLogger(__name__)

IMAGE_FORMATS = ("JPEG", "PNG")
OUTSIDE_CLASS_FOLDER = "not inside a class folder (expected: one sub-folder per class, SOURCE/CLASS/IMAGE)"
# Planning weight of opening one file, in bytes: tasks are balanced on size + this per file.
_FILE_COST_BYTES = 16 * 1024


@dataclass(frozen=True)
class IngestReport:
    """What one ingest run saw and did with it."""

    files_seen: int
    rows_written: int
    rows_quarantined: int
    classes: int
    image_size: int
    seconds: float = 0.0
    spark_jobs: int = 0
    # How the usable records are split and stored (``ingest_layout``): preprocess publishes them as
    # they are when its own settings match, and rewrites them otherwise.
    layout: dict = field(default_factory=dict)
    source: str = ""
    # This ingest's share: what it read and wrote, and how the source changed since the last one
    # (``whole``: everything was read).
    increment: dict = field(default_factory=dict)


def ingest_layout(preprocess: PreprocessConfig, compression: str) -> dict:
    """The split, row-group size and codec of the records ingest writes for these settings."""
    return {
        "split": preprocess.split.model_dump(),
        "rows_per_row_group": preprocess.rows_per_row_group,
        "compression": compression,
    }


def decode_image(content: bytes | None, size: int) -> bytes:
    """Decode a JPEG/PNG of any mode, apply EXIF rotation, convert to RGB, resize to size x size.

    Returns the pixels as size*size*3 uint8 bytes. Raises ValueError saying why it cannot.
    """
    return _decoded(content, size)[0].tobytes()


def _decoded(content: bytes | None, size: int):
    """``decode_image`` as a Pillow RGB image, with the file's own shape (``source_shape``)."""
    from PIL import Image, ImageOps

    if not content:
        raise ValueError("empty file")
    try:
        image = Image.open(io.BytesIO(content))
        if image.format not in IMAGE_FORMATS:
            raise ValueError(f"not a JPEG or PNG image (found {image.format})")
        shape = source_shape(max(image.size), image.mode)  # draft() below changes the size
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result stays >= size
        # (what Image.thumbnail does); a large photo shrunk to 32 px decodes several times faster.
        image.draft(None, (size, size))
        image.load()  # decodes fully: truncated data fails here, not later
        image = ImageOps.exif_transpose(image)
    except ValueError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise ValueError(f"cannot decode image: {type(err).__name__}: {err}") from None
    return _to_rgb(image).resize((size, size), Image.Resampling.BILINEAR), shape


def source_shape(longest_side: int, mode: str) -> str:
    """An image's shape as the data profile counts it: "64-127 px RGB"."""
    return f"{band(longest_side, 'px')} {mode}"


def _to_rgb(image):
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def mix_classes(listing: pa.Table) -> pa.Table:
    """The listing in an order that mixes the class folders (sorted by a hash of the path).

    Tasks take consecutive files and write them in order, and Petastorm later hands whole row groups
    to the ranks: in folder order every row group would hold a single class. Mixing here, on the
    driver's list of names, spreads the classes without shuffling any image data; the order is
    the same on every run over the same files.
    """
    keys = np.array([zlib.crc32(relpath.encode()) for relpath in listing.column("relpath").to_pylist()])
    return listing.take(pa.array(np.argsort(keys, kind="stable")))


def plan_tasks(sizes: np.ndarray, settings: IngestConfig, cores: int) -> np.ndarray:
    """Cut the listing (in order) into tasks of about ``task_bytes`` and at most ``task_files`` files.

    Returns the start offset of each task plus the end (len(sizes)). At least two tasks per core,
    and a multiple of ``cores`` so that the last round keeps every core busy; never an empty task.
    """
    count = len(sizes)
    weight = np.cumsum(sizes.astype(np.float64) + _FILE_COST_BYTES)
    total = float(weight[-1]) if count else 0.0
    tasks = max(math.ceil(total / settings.task_bytes), math.ceil(count / settings.task_files), 2 * cores)
    tasks = max(1, min(cores * math.ceil(tasks / cores), count))
    cuts = np.searchsorted(weight, np.arange(1, tasks) * total / tasks, side="right")
    return np.unique(np.concatenate([[0], cuts, [count]]))


def decode_listed(
    relpaths: list[str], source_uri: str, image_size: int, batch_bytes: int, labelled: bool = True
) -> Iterator[pa.RecordBatch]:
    """Read and decode the listed files; yield record batches (``IMAGE_RECORDS``)
    of about ``batch_bytes`` of pixels each. A file that cannot be used gets a ``reason`` instead.
    ``labelled``: the first folder of a path is its class, and a file outside any folder is unusable."""
    rows_per_batch = max(1, batch_bytes // (image_size * image_size * 3))
    for start in range(0, len(relpaths), rows_per_batch):
        yield _decode_batch(relpaths[start : start + rows_per_batch], source_uri, image_size, labelled)


def _decode_batch(relpaths: list[str], source_uri: str, image_size: int, labelled: bool) -> pa.RecordBatch:
    paths = [f"{source_uri}/{relpath}" for relpath in relpaths]
    labels = [relpath.split("/", 1)[0] if labelled and "/" in relpath else None for relpath in relpaths]
    pixels, hashes, shapes, reasons = [], [], [], []
    for path, label in zip(paths, labels, strict=True):
        image, shape = None, None
        reason = OUTSIDE_CLASS_FOLDER if labelled and label is None else None
        if reason is None:
            try:
                image, shape = _decoded(filesystems.read_bytes(path), image_size)
            except ValueError as err:
                reason = str(err)
            except IsADirectoryError:
                reason = "a link to a folder listed already (a loop or an alias): not followed"
            except OSError as err:
                reason = f"cannot read file: {err}"
        content = image.tobytes() if image else None
        pixels.append(content)
        hashes.append(_pixels_hash(content) if content else None)
        shapes.append(shape)
        reasons.append(reason)
    # Per-channel sums and sums of squares for the statistics, for the whole batch at once.
    decoded = np.array([reason is None for reason in reasons])
    sums, squares = _channel_sums(b"".join(p for p in pixels if p), image_size)
    offsets = pa.array(np.arange(0, 3 * len(relpaths) + 1, 3, dtype=np.int32))

    def per_channel(values: np.ndarray) -> pa.Array:
        full = np.zeros((len(relpaths), 3))
        full[decoded] = values
        return pa.ListArray.from_arrays(offsets, pa.array(full.ravel()), mask=pa.array(~decoded))

    columns = [
        pa.array(paths, pa.string()),
        pa.array(relpaths, pa.string()),
        pa.array(labels, pa.string()),
        pa.array(pixels, pa.binary()),
        per_channel(sums),
        per_channel(squares),
        pa.array(hashes, pa.int64()),
        pa.array(shapes, pa.string()),
        pa.array(reasons, pa.string()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=_records_schema())


def _channel_sums(pixels: bytes, image_size: int, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per image and channel, the sum and the sum of squares of the pixel values (exact integers).

    Channels are made contiguous first, a few images at a time: reductions over the strided channel
    axis are several times slower, and a matrix product would start BLAS threads in every worker.
    """
    flat = np.frombuffer(pixels, np.uint8).reshape(-1, image_size * image_size, 3)
    sums, squares = np.zeros((len(flat), 3)), np.zeros((len(flat), 3))
    for start in range(0, len(flat), chunk):
        channels = np.ascontiguousarray(flat[start : start + chunk].transpose(0, 2, 1))
        sums[start : start + chunk] = channels.sum(axis=2, dtype=np.uint64)
        squares[start : start + chunk] = np.square(channels, dtype=np.uint32).sum(axis=2, dtype=np.uint64)
    return sums, squares


def _pixels_hash(pixels: bytes) -> int:
    """A 64-bit checksum of the pixels (CRC-32 and Adler-32), for the order-independent split digests:
    it detects changed pixels, and costs a quarter of a cryptographic hash."""
    value = zlib.crc32(pixels) << 32 | zlib.adler32(pixels)
    return value - (1 << 64) if value >= 1 << 63 else value


def _records_schema() -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(IMAGE_RECORDS)


def decoding_tasks(
    listing_uri: str,
    source_uri: str,
    image_size: int,
    batch_bytes: int,
    labelled: bool = True,
    rows: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    split: SplitConfig | None = None,
) -> Callable[[int], Iterator[tuple[str, pa.RecordBatch]]]:
    """``produce(task)`` for ``spark_writes.write_from_tasks``: decodes the files of listing part ``task``
    and yields ("usable", batch) and ("unusable", batch) pairs of ``IMAGE_RECORDS`` batches (or of
    what ``rows`` makes of them); with ``split``, each usable row under its split's name instead
    (``split_names``: the split preprocess computes from the same path)."""

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        relpaths = pq.read_table(part_uri(listing_uri, task), columns=["relpath"]).column("relpath")
        for batch in decode_listed(relpaths.to_pylist(), source_uri, image_size, batch_bytes, labelled):
            batch = rows(batch) if rows else batch
            failed = batch.column("reason").null_count != batch.num_rows
            usable = pc.is_null(batch.column("reason")) if failed else None
            kept = batch.filter(usable) if failed else batch
            if split is None:
                yield "usable", kept
            else:
                names = split_names(kept.column("relpath").to_pylist(), split)
                for name in SPLITS:
                    yield name, kept.filter(pa.array(names == name))
            if failed:
                yield "unusable", batch.filter(pc.invert(usable))

    return produce


def decode_and_write(
    spark: SparkSession | None,
    listing_uri: str,
    tasks: int,
    source_uri: str,
    catalog: Catalog,
    settings: IngestConfig,
    preprocess: PreprocessConfig,
    append: str | None = None,
) -> list[tuple[str, str, int]]:
    """One Spark task per listing part decodes its files and writes the records (``IMAGE_RECORDS``)
    itself: usable ones to their split's folder of the catalog's ingested data set, in row groups of
    ``preprocess.rows_per_row_group`` rows (what the ranks stream), the others to its quarantine folder.
    With ``append`` (an increment), the files join those already there; without ``spark``, the tasks
    run in this process. Returns the files written."""
    if not append:
        _drop_unsplit_records(catalog)
    return spark_writes.write_from_tasks(
        spark,
        tasks,
        decoding_tasks(
            listing_uri, source_uri, settings.image_size, settings.batch_bytes, split=preprocess.split
        ),
        _records_schema(),
        _record_locations(catalog),
        preprocess.rows_per_row_group * (settings.image_size**2 * 3 + 64),
        settings.compression,
        plain_columns=("pixels",),
        append=append,
    )


def _record_locations(catalog: Catalog) -> dict:
    return {**{name: catalog.ingested_split(name) for name in SPLITS}, "unusable": catalog.quarantine}


def _drop_unsplit_records(catalog: Catalog) -> None:
    """Delete ingested records written before ingest split them (files right in the folder), which
    would otherwise sit beside the ``split=`` folders."""
    import pyarrow.fs as pafs

    fs, root, _ = filesystems.filesystem(catalog.ingested)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return
    children = fs.get_file_info(pafs.FileSelector(root))
    if any(info.type == pafs.FileType.File and info.base_name.endswith(".parquet") for info in children):
        fs.delete_dir(root)


def part_uri(listing_uri: str, part: int) -> str:
    return f"{listing_uri.removeprefix('file:')}/part-{part:05d}.parquet"


def write_listing(listing: pa.Table, starts: np.ndarray, location) -> str:
    """Write the listing as one Parquet file per task (``part-NNNNN.parquet``); returns its URI."""
    import pyarrow.parquet as pq

    fs, root, prefix = filesystems.filesystem(location)
    fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    for part, (start, stop) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        pq.write_table(listing.slice(start, stop - start), f"{root}/part-{part:05d}.parquet", filesystem=fs)
    return prefix + root


def list_images(
    spark: SparkSession, source: str, settings: IngestConfig, location
) -> tuple[pa.Table, str, int]:
    """List the visible files under ``source`` in class-mixing order and write the listing in one part
    per planned Spark task to ``location``. Returns (listing, listing URI, number of tasks)."""
    listing = mix_classes(listed_images(source))
    return (listing, *plan_listing(listing, settings, location, spark.sparkContext.defaultParallelism))


def listed_images(source: str) -> pa.Table:
    """The visible files under ``source`` (relpath, size, mtime); DataError when there is none."""
    listing = filesystems.visible_files(filesystems.list_source(source))
    if listing.num_rows == 0:
        raise DataError(source, "no files found (hidden files and folders are ignored)")
    return listing


def plan_listing(listing: pa.Table, settings: IngestConfig, location, cores: int) -> tuple[str, int]:
    """Write ``listing`` in one part per task planned for ``cores`` to ``location``: (its URI, the tasks)."""
    starts = plan_tasks(listing.column("size").to_numpy(), settings, cores)
    return write_listing(listing, starts, location), len(starts) - 1


def run(config: ImagePipelineConfig, start_spark: Callable[[], SparkSession], source: str) -> IngestReport:
    """Ingest the image tree at ``source`` into the catalog's images and quarantine tables: only what
    changed since the last ingest (``increments``) when it wrote with these settings, else all of it.
    When it reads at most ``ingest.driver_increment_files`` files (new and changed ones, or all of
    them) of at most ``ingest.task_bytes``, they are decoded in this process, and Spark is not
    started: its JVM and workers would take longer to start than the files to decode."""
    catalog = Catalog.for_workdir(config.workdir)
    settings = config.ingest
    layout = ingest_layout(config.preprocess, settings.compression)
    listing = listed_images(source)
    facts = {"source": source, "image_size": settings.image_size, "layout": layout}
    last = increments.last_snapshot(catalog, facts, _record_locations(catalog).values())
    number = (increments.snapshot_numbers(catalog) or [0])[-1] + 1
    change = increments.difference(listing, last) if last is not None else None
    to_read = mix_classes(change.to_read if change else listing)
    if change:
        log.info("ingest: %s since the last ingest", change.description)
    total = to_read.num_rows
    # Few files, and no more bytes than one Spark task reads: on any master, faster here than
    # Spark's start, and never a long single-process decode of large photos.
    size = int(to_read["size"].to_numpy().sum())
    in_driver = total <= settings.driver_increment_files and size <= settings.task_bytes
    spark = None if in_driver else start_spark()
    with stage_progress(spark, "ingest", total, "files") as stage:
        written = []
        if total:
            if spark is None and change:  # one task: its files join the splits' earlier ones
                listing_uri, tasks = write_listing(to_read, np.array([0, total]), catalog.listing), 1
            else:  # in the driver too, the tasks Spark would run: each rank streams whole row groups
                cores = planned_cores(config.spark)  # a started session's own, when there is one
                listing_uri, tasks = plan_listing(to_read, settings, catalog.listing, cores)
            where = f"{tasks} Spark tasks" if spark else "the driver"
            log.info("ingest: %d files (%.1f MB) in %s", total, size / 1e6, where)
            written = decode_and_write(
                spark,
                listing_uri,
                tasks,
                filesystems.source_uri(source),
                catalog,
                settings,
                config.preprocess,
                append=f"i{number:05d}" if change else None,
            )
        merged = _apply_change(catalog, change, number, settings, config.preprocess) if change else 0
        counts = check_accounted(listing.num_rows, catalog, source, "files")
        _check_increment(source, total, written)
        increments.record_snapshot(catalog, number, listing, _parts(catalog, last))
    report = IngestReport(
        listing.num_rows,
        counts.written,
        counts.quarantined,
        counts.classes,
        settings.image_size,
        round(stage.seconds, 2),
        stage.jobs,
        layout,
        source,
        increments.summary(number, change, to_read.num_rows, written, merged),
    )
    atomic.write_json_atomically(asdict(report), catalog.ingest_report)
    retention.keep_newest_snapshots(catalog, config.retention.snapshots)
    log.info(
        "ingest: %d files seen, %d rows written, %d quarantined, %d classes",
        report.files_seen,
        report.rows_written,
        report.rows_quarantined,
        report.classes,
    )
    return report


def _apply_change(
    catalog: Catalog,
    change: increments.Difference,
    number: int,
    settings: IngestConfig,
    preprocess: PreprocessConfig,
) -> int:
    """``increments.apply_change`` on the records: small files hold under 8 row groups."""
    rows = preprocess.rows_per_row_group
    return increments.apply_change(
        change,
        number,
        _record_locations(catalog).values(),
        spark_writes.writer_options(_records_schema(), settings.compression, ("pixels",)),
        (8 * rows, settings.compact_files, rows),
    )


def _parts(catalog: Catalog, last: pa.Table | None) -> pa.Table:
    """(relpath, part) of every record now (``increments.current_parts``)."""
    files = [uri for place in _record_locations(catalog).values() for uri in parquet.data_files(place)]
    return increments.current_parts(last, files)


def _check_increment(source: str, read: int, written: list[tuple[str, str, int]]) -> None:
    """The files read this time = the rows they gave (written + quarantined)."""
    rows = sum(count for _, _, count in written)
    if rows != read:
        raise DataError(source, f"files read this ingest ({read}) != rows they gave ({rows})")
