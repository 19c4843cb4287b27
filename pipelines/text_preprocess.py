"""Text preprocess stage: ingested records -> token-id sequences per split + the fitted vocabulary.

The vocabulary is fitted on the train split only, with Spark's own distributed operations; the
tokenizer is the one the served model uses (``transforms.tokenize``), so both see the same tokens.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines import schemas
from pipelines.catalog import Catalog
from pipelines.config import TextPipelineConfig, TextPreprocessConfig
from pipelines.errors import DataError
from pipelines.preprocess import assign_split, index_labels, read_ingested, write_splits
from pipelines.transforms import RESERVED_TOKENS, TextTransform, tokenize


def tokenize_texts(df: DataFrame, settings: TextPreprocessConfig) -> DataFrame:
    """Add ``words``: the normalised tokens of ``text``."""
    lowercase, unescape = settings.lowercase, settings.html_unescape

    @F.pandas_udf("array<string>")
    def words(texts: pd.Series) -> pd.Series:
        return texts.map(lambda text: tokenize(text, lowercase=lowercase, html_unescape=unescape))

    return df.withColumn("words", words(F.col("text")))


def fit_vocabulary(tokenized: DataFrame, vocab_size: int) -> list[str]:
    """The ``vocab_size`` - 2 most frequent words (ties by word, for determinism) after the reserved ids."""
    counts = tokenized.select(F.explode("words").alias("word")).groupBy("word").count()
    top = counts.orderBy(F.desc("count"), F.asc("word")).limit(vocab_size - len(RESERVED_TOKENS))
    return RESERVED_TOKENS + [row["word"] for row in top.collect()]


def encode_texts(tokenized: DataFrame, transform: TextTransform) -> DataFrame:
    """Add ``tokens``: ``words`` as max_len int32 ids (padded/truncated at the end), as bytes."""

    @F.pandas_udf("binary")
    def ids(words: pd.Series) -> pd.Series:
        return words.map(lambda tokens: transform.encode_tokens(tokens).astype("<i4").tobytes())

    return tokenized.withColumn("tokens", ids(F.col("words")))


def run(config: TextPipelineConfig, spark: SparkSession) -> dict:
    """Split the records, fit the vocabulary on train, write token ids per split and the transform."""
    catalog = Catalog.for_workdir(config.workdir)
    settings = config.preprocess
    records = assign_split(read_ingested(spark, catalog), settings.split, key="key")
    tokenized = tokenize_texts(records, settings).cache()
    try:
        vocabulary = fit_vocabulary(tokenized.where(F.col("split") == "train"), settings.vocab_size)
        if len(vocabulary) == len(RESERVED_TOKENS):
            raise DataError(str(catalog.ingested), "the train split has no words to build a vocabulary from")
        transform = TextTransform(
            vocabulary, config.data.classes, settings.max_len, settings.lowercase, settings.html_unescape
        )
        indexed = index_labels(encode_texts(tokenized, transform), transform.class_names)
        row_bytes = settings.max_len * 4 + 400  # ids plus the kept raw text, roughly
        return write_splits(indexed, schemas.TEXT_SPLIT, transform, settings, catalog, row_bytes)
    finally:
        tokenized.unpersist()
