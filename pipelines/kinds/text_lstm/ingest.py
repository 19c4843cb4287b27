"""Text ingest stage: CSV, TSV or JSON Lines records -> (key, path, text, label) rows in Parquet.

Every record the parser produces goes to exactly one of two tables: usable ones to the ingested
table, the rest to the quarantine table with the reason (and the raw record when the parser kept
it). Every run checks records seen = rows written + rows quarantined.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from pipelines.core import schemas
from pipelines.core.catalog import Catalog
from pipelines.core.errors import ConfigError, DataError
from pipelines.ingest import increments
from pipelines.ingest.accounting import check_accounted, outcome_locations, write_by_reason
from pipelines.io import atomic, filesystems, parquet, retention, spark_writes
from pipelines.kinds.text_lstm.config import TextDataConfig, TextIngestConfig, TextPipelineConfig
from pipelines.kinds.text_lstm.schemas import TEXT_RECORDS
from pipelines.runtime.progress import spark_stage

log = logging.getLogger(__name__)

# Spark fills this column with the raw record whenever it cannot parse a record cleanly.
_CORRUPT = "_corrupt_record"
# A quoted CSV field with "" escapes; possessive quantifiers keep Java's regex from backtracking.
_QUOTED_FIELD = r'"(?:[^"]++|"")*+"'


@dataclass(frozen=True)
class TextIngestReport:
    """What one text ingest run saw and did with it."""

    records_seen: int
    rows_written: int
    rows_quarantined: int
    classes: int
    files_seen: int = 0
    empty_files: int = 0  # seen, holding no record
    seconds: float = 0.0
    spark_jobs: int = 0
    source: str = ""
    root: str = ""  # the source's URI, links resolved: an increment needs the same
    # The data settings the records were read with: an increment needs the same.
    data: dict = field(default_factory=dict)
    # This ingest's share: what it read and wrote, and how the source changed since the last one
    # (``whole``: everything was read).
    increment: dict = field(default_factory=dict)


def _column(name: str) -> Column:
    """A top-level column by its exact name, even one with dots or spaces in it."""
    return F.col("`" + name.replace("`", "``") + "`")


def _string_schema(names: list[str]) -> StructType:
    return StructType([StructField(name, StringType(), True) for name in [*names, _CORRUPT]])


def _delimited_options(data: TextDataConfig) -> dict[str, object]:
    # multiLine: quoted fields may hold newlines; escape='"': a quote inside quotes is written "".
    # recursiveFileLookup: read nested folders as plain files, no partition columns from their names.
    return {
        "encoding": data.charset,
        "sep": "\t" if data.format == "tsv" else ",",
        "header": data.header,
        "multiLine": True,
        "quote": '"',
        "escape": '"',
        "recursiveFileLookup": True,
    }


def _header(
    spark: SparkSession, paths: str | list[str], options: dict[str, object], source: str
) -> list[str]:
    """The column names in the header of the files at ``paths`` (Spark drops a UTF-8 BOM before them)."""
    try:
        names = spark.read.options(**options).csv(paths).columns
    except AnalysisException:
        names = []
    if not names:
        raise DataError(source, "no header found (no files, or only empty ones)")
    return names


def _shape_reason(record: Column, sep: str, expected: int) -> Column:
    """Why the CSV parser rejected ``record`` (null when it did not): mostly a wrong field count."""
    unquoted = F.regexp_replace(record, _QUOTED_FIELD, "")
    found = F.length(unquoted) - F.length(F.translate(unquoted, sep, "")) + 1
    return (
        F.when(record.isNull(), F.lit(None))
        .when(unquoted.contains('"'), F.lit("malformed record (unbalanced quotes)"))
        .when(found != expected, F.format_string(f"expected {expected} fields, found %d", found))
        .otherwise(F.lit("malformed record"))
    )


def _read_delimited(
    spark: SparkSession, data: TextDataConfig, paths: str | list[str], labelled: bool, source: str
) -> DataFrame:
    options = _delimited_options(data)
    names = _header(spark, paths, options, source) if data.header else list(data.columns or [])
    for wanted in (data.text_column, data.label_column) if labelled else (data.text_column,):
        if wanted not in names:
            found = f"columns: {', '.join(names)}"
            if data.header:
                raise DataError(source, f"the header has no column {wanted!r} ({found})")
            raise ConfigError("data.columns", f"has no column {wanted!r} ({found})")
    # PERMISSIVE puts any record with more or fewer fields than the schema into the corrupt column,
    # but only while that column is read: we always select it (selecting the data columns alone
    # lets Spark prune the check and silently drop extra fields).
    parsed = (
        spark.read.schema(_string_schema(names))
        .options(**options, mode="PERMISSIVE", columnNameOfCorruptRecord=_CORRUPT)
        .csv(paths)
    )
    malformed = _shape_reason(F.col(_CORRUPT), str(options["sep"]), len(names))
    return _records(parsed, data, malformed, labelled=data.label_column in names)


def _read_json_lines(spark: SparkSession, data: TextDataConfig, paths: str | list[str]) -> DataFrame:
    # String fields take any JSON value as its JSON text, so a label may be 7, 7.5 or "positive".
    parsed = (
        spark.read.schema(_string_schema([data.text_column, data.label_column]))
        .options(mode="PERMISSIVE", columnNameOfCorruptRecord=_CORRUPT, recursiveFileLookup=True)
        .option("encoding", data.charset)
        .json(paths)
    )
    return _records(parsed, data, F.when(F.col(_CORRUPT).isNotNull(), F.lit("malformed JSON record")))


def _records(parsed: DataFrame, data: TextDataConfig, malformed: Column, labelled: bool = True) -> DataFrame:
    """The parser's output as (path, text, label, record, malformed): one row per record seen."""
    return parsed.select(
        F.col("_metadata.file_path").alias("path"),
        _column(data.text_column).alias("text"),
        (_column(data.label_column) if labelled else F.lit(None).cast("string")).alias("label"),
        F.col(_CORRUPT).alias("record"),
        malformed.alias("malformed"),
    )


def read_records(
    spark: SparkSession,
    data: TextDataConfig,
    source: str,
    labelled: bool = True,
    files: list[str] | None = None,
) -> DataFrame:
    """Parse ``source`` (or only its ``files``, URIs) into one row per record the parser produced.

    Columns: ``path`` (file URI, URL-encoded as Spark reports it), ``text`` and ``label`` (strings
    as read), ``record`` (the raw record when the parser rejected it) and ``malformed`` (why it cannot
    be used, else null: the parser rejected it, or it holds bytes that are not valid UTF-8). Blank
    lines are not records. Unless ``labelled``, the label column may be missing (null labels).
    """
    paths = [_literal(uri) for uri in files] if files is not None else source
    if data.format == "jsonl":
        records = _read_json_lines(spark, data, paths)
    else:
        records = _read_delimited(spark, data, paths, labelled, source)
    if data.is_utf8 and data.encoding_errors == "quarantine":
        uris = files if files is not None else filesystems.file_uris(source)
        records = _quarantine_invalid_utf8(records, invalid_utf8_files(spark, uris))
    return records


def _literal(uri: str) -> str:
    """``uri`` as a path Spark's readers take literally: they expand glob characters."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", uri)


def invalid_utf8_files(spark: SparkSession, uris: list[str]) -> dict[str, int]:
    """{file URI: byte offset of its first invalid UTF-8 byte} for the files ``uris`` that have
    one; each file is checked on an executor, in chunks, and only the offending ones come back."""
    if not uris:
        return {}
    found = (
        spark.sparkContext.parallelize(uris, min(len(uris), spark.sparkContext.defaultParallelism * 4))
        .map(lambda uri: (uri, first_invalid_utf8(uri)))
        .filter(lambda pair: pair[1] is not None)
        .collect()
    )
    return dict(found)


def _quarantine_invalid_utf8(records: DataFrame, invalid: dict[str, int]) -> DataFrame:
    """Records of files with invalid UTF-8 that hold a replacement character get that reason
    (the decoder put U+FFFD where the bytes were)."""
    if not invalid:
        return records
    replaced = F.lit(False)
    for column in ("text", "label", "record"):
        replaced = replaced | F.coalesce(F.col(column).contains("\ufffd"), F.lit(False))
    # Keyed as Spark reports a record's path: URL-encoded (a space is %20), by Hadoop's Path.
    hadoop_path = records.sparkSession._jvm.org.apache.hadoop.fs.Path
    encoded = {hadoop_path(uri).toUri().toString(): offset for uri, offset in invalid.items()}
    offsets = F.create_map(*[F.lit(value) for pair in encoded.items() for value in pair])
    offset = F.element_at(offsets, F.regexp_replace("path", "^file:///", "file:/"))
    reason = F.when(
        offset.isNotNull() & replaced,
        F.format_string("invalid UTF-8 (the file's first invalid byte is at offset %d)", offset),
    )
    return records.withColumn("malformed", F.coalesce("malformed", reason))


def _label_reason(label: Column, data: TextDataConfig) -> Column:
    """Why ``label`` (trimmed) is unusable, or null."""
    missing = F.when(label.isNull() | (label == ""), F.lit("missing label"))
    if data.labels is not None:
        allowed = ", ".join(data.labels)
        unknown = F.concat(F.lit("label '"), label, F.lit(f"' is not one of {allowed}"))
        return F.coalesce(missing, F.when(~label.isin(data.labels), unknown))
    value = label.try_cast("double")  # ANSI mode: a plain cast would fail the job on "abc"
    not_number = F.concat(F.lit("label '"), label, F.lit("' is not a number"))
    return F.coalesce(missing, F.when(value.isNull() | F.isnan(value), not_number))


def _class_name(label: Column, data: TextDataConfig) -> Column:
    """The class name of a usable ``label`` (trimmed)."""
    if data.labels is not None:
        return label
    value = label.try_cast("double")
    index = sum((value >= threshold).cast("int") for threshold in data.label_thresholds or [])
    return F.element_at(F.array(*[F.lit(name) for name in data.classes]), index + 1)


def text_reason() -> Column:
    """Why a parsed record's text cannot be used (malformed record, empty text), or null."""
    empty_text = F.col("text").isNull() | F.col("text").rlike(r"(?U)^\s*$")
    return F.coalesce(F.col("malformed"), F.when(empty_text, F.lit("empty text")))


def label_records(records: DataFrame, data: TextDataConfig) -> DataFrame:
    """Add ``reason`` (null for a usable record), the class name as ``label``, and ``key``.

    ``key`` is the SHA-256 of the text, so duplicate texts share a split downstream. The text is
    kept verbatim: HTML entities and surrounding whitespace are preprocess's business.
    """
    label = F.trim(F.col("label"))
    reason = F.coalesce(text_reason(), _label_reason(label, data))
    return records.select(
        F.sha2(F.col("text"), 256).alias("key"),
        "path",
        "text",
        _class_name(label, data).alias("label"),
        "record",
        reason.alias("reason"),
    )


def first_invalid_utf8(uri: str, chunk_bytes: int = 1 << 20) -> int | None:
    """The byte offset of the first byte of ``uri`` that is not valid UTF-8, or None; read in chunks."""
    import codecs

    decoder, consumed = codecs.getincrementaldecoder("utf-8")(), 0
    with filesystems.open_input(uri) as stream:
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


def run(config: TextPipelineConfig, start_spark: Callable[[], SparkSession], source: str) -> TextIngestReport:
    """Ingest the text records at ``source`` into the catalog's ingested and quarantine tables: only
    the files that changed since the last ingest (``increments``) when it read them with these data
    settings, else all of them.

    One pass over the files read: every record the parser produces is written to exactly one of the
    two tables, so the records seen are the rows of both (read from the footers).
    """
    spark = start_spark()
    catalog = Catalog.for_workdir(config.workdir)
    listing = filesystems.visible_files(filesystems.list_source(source))  # the files Spark reads
    if listing.num_rows == 0:
        raise DataError(source, "no files found (hidden files and folders are ignored)")
    if config.data.format != "jsonl":
        _check_plain_names(source, listing)
    files = _SourceFiles(source)
    settings = config.data.model_dump(mode="json")
    # The source as resolved (a link retargeted reads everything again), and the data settings.
    facts = {"source": source, "root": files.root, "data": settings}
    last = increments.last_snapshot(catalog, facts, outcome_locations(catalog).values())
    number = (increments.snapshot_numbers(catalog) or [0])[-1] + 1
    change = increments.difference(listing, last) if last is not None else None
    to_read = change.to_read if change else listing
    if change:
        log.info("ingest: %s since the last ingest", change.description)
    megabytes = int(to_read.column("size").to_numpy().sum() // 1_000_000)
    with spark_stage(spark, "ingest", total=max(megabytes, 1), unit="MB") as stage:
        written: list[tuple[str, str, int]] = []
        if to_read.num_rows:
            uris = [files.uri(relpath) for relpath in to_read.column("relpath").to_pylist()]
            records = label_records(read_records(spark, config.data, source, files=uris), config.data)
            written = write_by_reason(
                schemas.conform(records, TEXT_RECORDS),
                catalog,
                to_arrow_schema(TEXT_RECORDS),
                append=f"i{number:05d}" if change else None,
                **{"parquet.block.size": str(32 * 1024 * 1024), "compression": "snappy"},
            )
        merged = _apply_change(catalog, change, number, config.ingest, files) if change else 0
        counts = check_accounted(None, catalog, source, "records")
        parts = increments.current_parts(last, _data_files(catalog), read=files.parts_of)
        increments.record_snapshot(catalog, number, listing, parts, records_per_file=True)
    sizes = listing.column("size").to_numpy()
    report = TextIngestReport(
        counts.written + counts.quarantined,
        counts.written,
        counts.quarantined,
        counts.classes,
        len(sizes),
        int((sizes == 0).sum()),
        round(stage.seconds, 2),
        stage.jobs,
        source,
        files.root,
        settings,
        increments.summary(number, change, to_read.num_rows, written, merged),
    )
    atomic.write_json_atomically(asdict(report), catalog.ingest_report)
    retention.keep_newest_snapshots(catalog, config.retention.snapshots)
    log.info(
        "text ingest: %d files (%d empty), %d records seen, %d rows written, %d quarantined, %d classes",
        report.files_seen,
        report.empty_files,
        report.records_seen,
        report.rows_written,
        report.rows_quarantined,
        report.classes,
    )
    return report


def _check_plain_names(source: str, listing: pa.Table) -> None:
    """CSV/TSV: Spark's multi-line reader (Hadoop's FileInputFormat) takes each file's path as a
    pattern, escapes or not, so a name with a pattern character is never found: say which."""
    for relpath in listing.column("relpath").to_pylist():
        if _PATTERN_CHARACTERS.search(relpath):
            raise DataError(
                source,
                f"{relpath}: Spark's CSV reader takes [ ] {{ }} * ? \\ in a path as a pattern and "
                "cannot read it; rename it",
            )


_PATTERN_CHARACTERS = re.compile(r"[\\\[\]{}*?]")


class _SourceFiles:
    """The files under ``source`` as URIs, and back: the relpath of a record's ``path`` (the URI as
    Spark reports it, URL-encoded), for files removed since too."""

    def __init__(self, source: str):
        import pyarrow.fs as pafs

        fs, inner, prefix = filesystems.filesystem(source)
        self.root = prefix + inner
        self.single = fs.get_file_info(inner).type == pafs.FileType.File  # data.source is one file

    def uri(self, relpath: str) -> str:
        return self.root if self.single else f"{self.root}/{relpath}"

    def relpaths(self, paths: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The relpath of each record's ``path``, computed once per distinct path."""
        distinct = pc.unique(paths)
        names = [self._relpath(unquote(path)) for path in distinct.to_pylist()]
        return pc.take(pa.array(names, pa.string()), pc.index_in(paths, value_set=distinct))

    def _relpath(self, uri: str) -> str:
        uri = re.sub("^file:///", "file:/", uri)
        if self.single:
            return uri.rsplit("/", 1)[-1]
        if not uri.startswith(self.root + "/"):
            raise DataError(self.root, f"a record's file {uri} is not under data.source")
        return uri[len(self.root) + 1 :]

    def parts_of(self, files) -> pa.Table:
        """(relpath, part) of each source file with records in the data ``files``, once per pair."""
        import pyarrow.parquet as pq

        tables = []
        for uri in files:
            fs, path, _ = filesystems.filesystem(uri)
            paths = pc.unique(pq.read_table(path, columns=["path"], filesystem=fs).column("path"))
            part = pa.DictionaryArray.from_arrays(pa.array([0] * len(paths), pa.int32()), [uri])
            tables.append(pa.table({"relpath": self.relpaths(paths), "part": part}))
        if not tables:
            return pa.table({"relpath": pa.array([], pa.string()), "part": pa.array([], increments.PART)})
        return pa.concat_tables(tables).unify_dictionaries()


def _data_files(catalog: Catalog) -> list[str]:
    return [uri for place in outcome_locations(catalog).values() for uri in parquet.data_files(place)]


def _apply_change(
    catalog: Catalog,
    change: increments.Difference,
    number: int,
    settings: TextIngestConfig,
    files: _SourceFiles,
) -> int:
    """``increments.apply_change`` on the ingested and quarantine tables; a record's file is its
    ``path``."""
    return increments.apply_change(
        change,
        number,
        outcome_locations(catalog).values(),
        spark_writes.writer_options(to_arrow_schema(TEXT_RECORDS), "snappy"),
        (_SMALL_FILE_ROWS, settings.compact_files, _SMALL_FILE_ROWS // 8),
        relpath_of=lambda group: files.relpaths(group["path"]),
    )


# Files of fewer records are merged by an increment (``ingest.compact_files``).
_SMALL_FILE_ROWS = 65_536
