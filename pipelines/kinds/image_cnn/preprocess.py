"""Preprocess stage: ingested images -> train/val/test Parquet for streaming + the fitted transform."""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import to_arrow_schema

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.config import PreprocessConfig, SplitConfig
from pipelines.core.errors import DataError
from pipelines.io import atomic, filesystems, parquet, spark_writes
from pipelines.kinds import kind_of
from pipelines.kinds.image_cnn.config import ImagePipelineConfig
from pipelines.kinds.image_cnn.ingest import ingest_layout
from pipelines.kinds.image_cnn.schemas import IMAGE_RECORDS, IMAGE_SPLIT
from pipelines.kinds.image_cnn.transform import ImageTransform
from pipelines.preprocess.profile import assemble_profile, checked_profile, duplicate_rows, record_profile
from pipelines.preprocess.splits import (
    kept_transform,
    publish_snapshot,
    record_splits,
    split_names,
    split_summaries,
)
from pipelines.runtime.progress import stage_progress
from pipelines.runtime.spark import BATCH_BYTES

log = logging.getLogger(__name__)


def channel_stats(sums: np.ndarray, squares: np.ndarray, pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std from per-channel sums and sums of squares over ``pixels`` pixels."""
    if pixels == 0:
        raise DataError("train split", "is empty: no statistics can be fitted")
    mean = np.asarray(sums, np.float64) / pixels
    var = np.asarray(squares, np.float64) / pixels - mean**2
    return mean.tolist(), np.sqrt(np.maximum(var, 1e-12)).tolist()


def publish_ingested_splits(catalog: Catalog) -> None:
    """Make ingest's split folders (``Catalog.ingested_split``) the splits, without reading them:
    ingest wrote them with the split, row groups and codec preprocess would write
    (``spark_writes.publish_files``: hard links on a local file system)."""
    spark_writes.publish_files(
        {name: parquet.data_files(catalog.ingested_split(name)) for name in SPLITS},
        {name: catalog.split(name) for name in SPLITS},
        to_arrow_schema(IMAGE_RECORDS),
    )


def written_as_splits(ingest_report: dict, config: PreprocessConfig) -> bool:
    """Whether ingest wrote its records as these settings' splits (``ingest.ingest_layout``)."""
    return ingest_report.get("layout") == ingest_layout(config, config.compression)


def write_image_splits(
    spark: SparkSession, catalog: Catalog, config: PreprocessConfig, row_bytes: int
) -> None:
    """Write every split of the ingested images (``IMAGE_SPLIT``) in one Spark job: for settings
    other than those ingest split its records with (``written_as_splits``).

    One task per ingested file reads it in batches of about ``BATCH_BYTES``, decides each row's split
    (``split_names``) and writes the rows to its split's folder itself, in row groups of about
    ``rows_per_row_group`` rows: no pixel crosses into the JVM. Rows keep the order ingest wrote,
    which already mixes the classes.
    """
    files = parquet.data_files(catalog.ingested)
    schema = to_arrow_schema(IMAGE_SPLIT)
    rows_per_batch = max(1, BATCH_BYTES // row_bytes)
    split = config.split

    def produce(task: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pyarrow.parquet as pq

        fs, path, _ = filesystems.filesystem(files[task])
        with fs.open_input_file(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(rows_per_batch, columns=schema.names):
                names = split_names(batch.column("relpath").to_pylist(), split)
                rows = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
                for name in SPLITS:
                    yield name, rows.filter(pa.array(names == name))

    spark_writes.write_from_tasks(
        spark,
        len(files),
        produce,
        schema,
        {name: catalog.split(name) for name in SPLITS},
        row_group_bytes=config.rows_per_row_group * row_bytes,
        compression=config.compression,
        plain_columns=("pixels",),
    )


def run(config: ImagePipelineConfig, start_spark: Callable[[], SparkSession]) -> dict:
    """Split the ingested images, fit the transform on train, write one Parquet data set per split.

    One pass in this process over the small columns only (``summarize_ingested``: split and label
    counts, digests, the channel sums computed at ingest, the profile); the splits are ingest's own
    files, which ingest wrote split (``publish_ingested_splits``): no pixel is read, and Spark is
    not started. With a split or storage other than ingest's, a Spark job writes every split
    (``write_image_splits``), the pixels read once, and only by Python workers.
    """
    catalog = Catalog.for_workdir(config.workdir)
    size = config.ingest.image_size
    try:
        written = sum(parquet.row_group_sizes(catalog.ingested))
    except FileNotFoundError:
        raise DataError(str(catalog.ingested), "no ingested data: run the ingest stage first") from None
    ingest_report = atomic.read_json(catalog.ingest_report)
    ingested_size = ingest_report.get("image_size", size)
    if written != ingest_report["rows_written"]:
        raise DataError(
            str(catalog.ingested),
            f"holds {written} rows, its ingest wrote {ingest_report['rows_written']}: re-run ingest",
        )
    if ingested_size != size:
        raise DataError(
            str(catalog.ingested),
            f"holds {ingested_size} px images, ingest.image_size is {size}: re-run ingest",
        )
    publish = written_as_splits(ingest_report, config.preprocess)
    spark = None if publish else start_spark()
    with stage_progress(spark, "preprocess", written, "images") as stage:
        stage.phase = "statistics"
        rows, duplicates, shapes = summarize_ingested(
            catalog, config.preprocess.split, lambda read: setattr(stage, "done", read)
        )
        class_names = sorted({row["label"] for row in rows})
        stage.phase = "profile"
        profile = checked_profile(
            catalog,
            assemble_profile(rows, duplicates, shapes.items(), class_names),
            config.validation,
            kind_of(config).learns_classes,
        )
        train = [row for row in rows if row["split"] == "train"]
        mean, std = channel_stats(
            np.array([sum(row[f"s{c}"] for row in train) for c in range(3)]),
            np.array([sum(row[f"q{c}"] for row in train) for c in range(3)]),
            sum(row["rows"] for row in train) * size * size,
        )
        kept = kept_transform(
            catalog, ingest_report, config.preprocess.refit, class_names, profile, config.validation.max_drift
        )
        transform = kept or ImageTransform(size, class_names, mean, std)
        if kept:
            log.info("preprocess: the transform fitted before is kept (preprocess.refit=true fits it again)")
        if publish:
            stage.phase = "publishing splits"
            publish_ingested_splits(catalog)
        else:
            stage.phase = "writing splits"
            log.info("preprocess: the split or its storage differs from ingest's: writing every split")
            write_image_splits(spark, catalog, config.preprocess, size * size * 3 + 64)
        report = record_splits(
            transform,
            catalog,
            split_summaries(rows, class_names),
            transform_kept=kept is not None,
            snapshot=publish_snapshot(catalog, ingest_report),
        )
        record_profile(catalog, profile)
    return {**report, "profile": profile, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}


# The small columns preprocess reads; ``source_shape`` is absent from data ingested before it was.
_COLUMNS = ("relpath", "label", "pixels_hash", "channel_sum", "channel_sq_sum")
_SHAPE = "source_shape"
_SPLITS_SORTED = np.array(sorted(SPLITS))  # a split's code is its index here


def summarize_ingested(
    catalog: Catalog, split: SplitConfig, progress: Callable[[int], None] = lambda rows: None
) -> tuple[list[dict], dict[str, int], Counter]:
    """One pass over the ingested records' small columns (no pixel), about 65,000 rows at a time, in
    this process: per (split, label), with the split ``split`` gives each path, the ``rows``, the
    ``digest`` (``row_digests``) and the sums of the channel sums and squares (``s0``-``s2``,
    ``q0``-``q2``); the profile's duplicate counts (``duplicate_rows``, from 13 bytes per row held
    to the end); and the rows per raw shape. ``progress`` gets the rows read so far.

    Raises DataError when a column is missing or has empty values (records not written by ingest).
    """
    totals: dict[tuple[int, int], dict] = {}
    label_codes: dict[str, int] = {}
    contents, labels, splits, shapes = [], [], [], Counter()
    read = 0
    for table in _in_chunks(
        parquet.column_batches(catalog.ingested, [*_COLUMNS, _SHAPE], optional=(_SHAPE,))
    ):
        _check_columns(catalog, table)
        relpaths, names = table.column("relpath").to_pylist(), table.column("label").to_pylist()
        hashes = table.column("pixels_hash").to_numpy().astype(np.int64, copy=False)
        split_code = np.searchsorted(_SPLITS_SORTED, split_names(relpaths, split))
        label_code = np.fromiter((label_codes.setdefault(name, len(label_codes)) for name in names), np.int64)
        group = label_code * len(SPLITS) + split_code
        order = np.argsort(group, kind="stable")
        present, starts = np.unique(group[order], return_index=True)
        digests = np.bitwise_xor.reduceat(row_digests(relpaths, names, hashes)[order], starts)
        counts = np.bincount(group)
        sums = {}
        for prefix, column in (("s", "channel_sum"), ("q", "channel_sq_sum")):
            values = pc.list_flatten(table.column(column)).to_numpy().reshape(-1, 3)
            for channel in range(3):
                sums[f"{prefix}{channel}"] = np.bincount(group, values[:, channel], minlength=len(counts))
        for code, digest in zip(present.tolist(), digests.tolist(), strict=True):
            total = totals.setdefault(
                divmod(code, len(SPLITS)), {"rows": 0, "digest": 0, **dict.fromkeys(sums, 0.0)}
            )
            total["rows"] += int(counts[code])
            total["digest"] ^= digest
            for key, values in sums.items():
                total[key] += float(values[code])
        contents.append(hashes)
        labels.append(label_code.astype(np.int32))
        splits.append(split_code.astype(np.int8))
        shapes.update(
            table.column(_SHAPE).to_pylist() if _SHAPE in table.column_names else [None] * len(table)
        )
        read += len(table)
        progress(read)
    names = {code: name for name, code in label_codes.items()}
    rows = [
        {"split": str(_SPLITS_SORTED[split_code]), "label": names[label_code], **total}
        for (label_code, split_code), total in totals.items()
    ]
    arrays = [
        np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in (contents, labels, splits)
    ]
    del contents, labels, splits
    return rows, duplicate_rows(*arrays), shapes


def _check_columns(catalog: Catalog, table: pa.Table) -> None:
    """No empty values in the columns ingest writes (``column_batches`` checked they are there):
    DataError naming the first column that has some."""
    for name in _COLUMNS:
        if table.column(name).null_count:
            raise DataError(
                str(catalog.ingested),
                f"has empty values in the column {name!r}: not written by this ingest "
                "(re-run ingest --force)",
            )


def _in_chunks(batches: Iterator[pa.RecordBatch], rows: int = 65536) -> Iterator[pa.Table]:
    """The batches joined into tables of about ``rows`` rows (a batch is one row group: 128 rows)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(held)
            held, count = [], 0
    if count:
        yield pa.Table.from_batches(held)


def row_digests(relpaths: list[str], labels: list[str], hashes: np.ndarray) -> np.ndarray:
    """Each record's share of its split's digest (the XOR of its rows', order-independent): its path
    (CRC-32 and Adler-32) and label (CRC-32), then its pixels' hash, each through a 64-bit mixer, so
    that pixels moved between two paths change the digest."""
    paths = np.fromiter(
        ((zlib.crc32(path.encode()) << 32) | zlib.adler32(path.encode()) for path in relpaths),
        np.uint64,
        len(relpaths),
    )
    crcs = {label: zlib.crc32(label.encode()) for label in set(labels)}
    names = np.fromiter((crcs[label] for label in labels), np.uint64, len(labels))
    return _mix64(_mix64(paths ^ names) ^ hashes.view(np.uint64))


def _mix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (every input bit moves every output bit), wrapping in uint64."""
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))
