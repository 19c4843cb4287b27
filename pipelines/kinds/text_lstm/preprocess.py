"""Text preprocess stage: ingested records -> token-id sequences per split + the fitted vocabulary.

The vocabulary is fitted on the train split only, with Spark's own distributed operations; the
tokenizer is the one the served model uses (``transform.tokenize``), so both see the same tokens.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from pipelines.core import schemas
from pipelines.core.catalog import SPLITS, Catalog
from pipelines.core.errors import DataError
from pipelines.io import atomic, filesystems, parquet, spark_writes
from pipelines.io.spark_writes import EMPTY_FILE
from pipelines.kinds import kind_of
from pipelines.kinds.text_lstm.config import TextPipelineConfig, TextPreprocessConfig
from pipelines.kinds.text_lstm.schemas import TEXT_SPLIT
from pipelines.kinds.text_lstm.transform import RESERVED_TOKENS, TextTransform, tokenize
from pipelines.preprocess.profile import checked_profile, data_profile, power_of_two_band, record_profile
from pipelines.preprocess.splits import (
    assign_split,
    index_labels,
    kept_transform,
    publish_snapshot,
    read_ingested,
    record_splits,
    split_summaries,
    summarize_splits,
)
from pipelines.runtime.progress import spark_stage
from pipelines.runtime.spark import size_batches

log = logging.getLogger(__name__)


def tokenize_texts(df: DataFrame, settings: TextPreprocessConfig) -> DataFrame:
    """Add ``words``: the normalised tokens of ``text``."""
    lowercase, unescape = settings.lowercase, settings.html_unescape

    @F.pandas_udf("array<string>")
    def words(texts: pd.Series) -> pd.Series:
        return texts.map(lambda text: tokenize(text, lowercase=lowercase, html_unescape=unescape))

    return df.withColumn("words", words(F.col("text")))


def text_shape(text: Column) -> Column:
    """A text's shape as the data profile counts it: the band of its word count, "16-31 words"."""
    return power_of_two_band(F.size(F.split(F.trim(text), r"\s+")), "words")


def fit_vocabulary(tokenized: DataFrame, vocab_size: int) -> list[str]:
    """The ``vocab_size`` - 2 most frequent words (ties by word, for determinism) after the reserved ids."""
    counts = tokenized.select(F.explode("words").alias("word")).groupBy("word").count()
    top = counts.orderBy(F.desc("count"), F.asc("word")).limit(vocab_size - len(RESERVED_TOKENS))
    return RESERVED_TOKENS + [row["word"] for row in top.collect()]


def encode_texts(df: DataFrame, transform: TextTransform) -> DataFrame:
    """Add ``tokens``: ``text`` tokenized as the served model does, as ``max_len`` int32 ids
    (padded/truncated at the end), as bytes."""

    @F.pandas_udf("binary")
    def ids(texts: pd.Series) -> pd.Series:
        return pd.Series(list(transform.encode(texts)), dtype=object).map(
            lambda row: row.astype("<i4").tobytes()
        )

    return df.withColumn("tokens", ids(F.col("text")))


def fit_transform(
    records: DataFrame, settings: TextPreprocessConfig, class_names: list[str], catalog: Catalog
) -> TextTransform:
    """The transform with a vocabulary fitted on the train split of ``records`` (``fit_vocabulary``)."""
    vocabulary = fit_vocabulary(
        tokenize_texts(records.where(F.col("split") == "train"), settings), settings.vocab_size
    )
    if len(vocabulary) == len(RESERVED_TOKENS):
        raise DataError(str(catalog.ingested), "the train split has no words to build a vocabulary from")
    return TextTransform(
        vocabulary, class_names, settings.max_len, settings.lowercase, settings.html_unescape
    )


def kept_vocabulary(
    catalog: Catalog, ingest_report: dict, config: TextPipelineConfig, profile: dict, previous: dict
) -> TextTransform | None:
    """The transform fitted before, after an incremental ingest (``splits.kept_transform``), when it
    was fitted with these settings (vocabulary size in the ``previous`` preprocess report, sequence
    length, normalisation); else None."""
    settings = config.preprocess
    kept = kept_transform(
        catalog, ingest_report, settings.refit, config.data.classes, profile, config.validation.max_drift
    )
    if kept is None or previous.get("vocab_size") != settings.vocab_size:
        return None
    normalised = (kept.max_len, kept.lowercase, kept.html_unescape)
    return kept if normalised == (settings.max_len, settings.lowercase, settings.html_unescape) else None


def split_row_bytes(settings: TextPreprocessConfig) -> int:
    """About the bytes of one split row: the token ids plus the kept raw text."""
    return settings.max_len * 4 + 400


def encode_splits(
    spark: SparkSession,
    catalog: Catalog,
    transform: TextTransform,
    settings: TextPreprocessConfig,
    whole: bool,
    ingested_rows: int,
) -> dict:
    """Write the token ids of the ingested records to their splits, in one Spark job; each split file
    holds the rows of one ingested file and is named after it (``o<a hash of its name>-``). Unless
    ``whole``, only the ingested files without split files yet are encoded (an increment's), and the
    split files of ingested files that are gone are deleted first: the rest stay as written.
    ``ingested_rows``: the rows of the ingested table. Returns the numbers of ingested files encoded
    and of split files deleted."""
    ingested = {_origin(uri): uri for uri in parquet.data_files(catalog.ingested)}
    held = [] if whole else [uri for name in SPLITS for uri in parquet.data_files(catalog.split(name))]
    origins = {uri: _ORIGIN.search(uri.rsplit("/", 1)[1]) for uri in held if not uri.endswith(EMPTY_FILE)}
    whole = whole or not all(origins.values())  # split files of an older layout
    stale = [] if whole else [uri for uri, found in origins.items() if found.group(1) not in ingested]
    encoded = {found.group(1) for found in origins.values() if found and not whole}
    to_encode = [uri for origin, uri in ingested.items() if origin not in encoded]
    # The split files kept and those to write must hold every ingested row once: not so after a
    # preprocess that died moving an increment's files in (an origin in some splits only).
    kept_rows = sum(_rows(uri) for uri in origins if uri not in stale)
    if not whole and kept_rows + sum(_rows(uri) for uri in to_encode) != ingested_rows:
        log.info("preprocess: the splits do not hold the ingested records once: encoding them all again")
        whole, stale, to_encode = True, [], list(ingested.values())
    for uri in stale:
        fs, path, _ = filesystems.filesystem(uri)
        fs.delete_file(path)
    if to_encode or whole:
        records = spark.read.parquet(*to_encode).withColumn("origin", _origin_column())
        records = assign_split(records, settings.split, key="key")
        rows = index_labels(encode_texts(records, transform), transform.class_names)
        # Rows are written in the order a task reads them; input sorted by label (a dated export)
        # would give single-class row groups. A sort by a hash of the key within each task (no
        # shuffle; it spills, so memory stays bounded) mixes them, split by split.
        rows = schemas.conform(rows, TEXT_SPLIT, keep=("split", "origin"))
        rows = rows.sortWithinPartitions("origin", "split", F.xxhash64("key"))
        row_bytes = split_row_bytes(settings)
        spark_writes.write_partitions(
            rows,
            "split",
            {name: catalog.split(name) for name in SPLITS},
            to_arrow_schema(TEXT_SPLIT),
            by="origin",
            append=None if whole else f"p{uuid.uuid4().hex[:8]}",
            compression=settings.compression,
            **{
                "parquet.block.size": str(max(64 * 1024, settings.rows_per_row_group * row_bytes)),
                "parquet.block.size.row.check.min": "10",
            },
        )
    return {"whole": whole, "files_encoded": len(to_encode), "split_files_deleted": len(stale)}


# A split file's name starts with the origin of its rows: ``o`` and 64 bits of the SHA-256 of the
# ingested file's name.
_ORIGIN = re.compile(r"(?:^|-)o([0-9a-f]{16})-part-")


def _origin(uri: str) -> str:
    return hashlib.sha256(uri.rsplit("/", 1)[1].encode()).hexdigest()[:16]


def _origin_column() -> Column:
    return F.concat(F.lit("o"), F.substring(F.sha2(F.col("_metadata.file_name"), 256), 1, 16))


def _rows(uri: str) -> int:
    """The rows of one Parquet file, from its footer."""
    return sum(parquet.row_group_sizes(uri))


def run(config: TextPipelineConfig, start_spark: Callable[[], SparkSession]) -> dict:
    """Split the records, fit the vocabulary on train, write token ids per split and the transform.

    Spark jobs and nothing cached: per-split label counts and digests over the small columns, the
    profile, word counts of the train split (only word counts are shuffled; not after an incremental
    ingest, which keeps the vocabulary: ``kept_vocabulary``), then one job that tokenizes, encodes
    and writes the splits (after an incremental ingest, only the new ingested files: ``encode_splits``).
    """
    spark = start_spark()
    catalog = Catalog.for_workdir(config.workdir)
    settings = config.preprocess
    size_batches(spark, split_row_bytes(settings))
    records = assign_split(read_ingested(spark, catalog), settings.split, key="key")
    try:
        ingest_report = atomic.read_json(catalog.ingest_report)
    except OSError:  # records written without the ingest stage: a whole data set, no snapshot
        ingest_report = {}
    try:  # the last preprocess's: what its vocabulary and splits were made with
        previous = atomic.read_json(catalog.preprocess_report)
    except (OSError, ValueError):
        previous = {}
    total = sum(parquet.row_group_sizes(catalog.ingested))
    class_names = config.data.classes
    with spark_stage(spark, "preprocess", total=total, unit="records") as stage:
        stage.phase = "counts"
        counts = summarize_splits(records, ["key", "label"])
        summaries = split_summaries(counts, class_names)
        stage.phase = "profile"
        profile = checked_profile(
            catalog,
            data_profile(records, F.col("key"), text_shape(F.col("text")), counts, class_names),
            config.validation,
            kind_of(config).learns_classes,
        )
        kept = kept_vocabulary(catalog, ingest_report, config, profile, previous)
        if kept:
            log.info("preprocess: the vocabulary fitted before is kept (preprocess.refit=true fits it again)")
        stage.phase = "vocabulary"
        transform = kept or fit_transform(records, settings, class_names, catalog)
        stage.phase = "writing splits"
        layout = {"split": settings.split.model_dump(), "rows_per_row_group": settings.rows_per_row_group}
        layout["compression"] = settings.compression
        increment = kept is not None and previous.get("layout") == layout  # the splits there fit
        encoded = encode_splits(spark, catalog, transform, settings, not increment, total)
        report = record_splits(
            transform,
            catalog,
            summaries,
            transform_kept=kept is not None,
            snapshot=publish_snapshot(catalog, ingest_report),
            vocab_size=settings.vocab_size,
            layout=layout,
            encoded=encoded,
        )
        record_profile(catalog, profile)
    return {**report, "profile": profile, "seconds": round(stage.seconds, 2), "spark_jobs": stage.jobs}
