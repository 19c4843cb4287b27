"""The sentiment classifier's configuration: delimited or JSON Lines text records, the LSTM."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, model_validator

from pipelines.core.config import PipelineBase, PreprocessConfig, Section

# The character sets Spark's CSV and JSON readers decode, by Python's canonical codec name (so that
# aliases such as latin-1 or UTF8 are accepted).
SPARK_CHARSETS = {
    "utf-8": "utf-8",
    "iso8859-1": "iso-8859-1",
    "ascii": "us-ascii",
    "utf-16": "utf-16",
    "utf-16-be": "utf-16be",
    "utf-16-le": "utf-16le",
    "utf-32": "utf-32",
}


def _python_codec(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


class TextDataConfig(Section):
    source: str | None = Field(
        None,
        description="raw input: a CSV/TSV/JSON Lines file or folder (any Hadoop path); unset writes the demo",
    )
    format: Literal["csv", "tsv", "jsonl"] = Field("csv", description="file format of data.source")
    header: bool = Field(True, description="CSV/TSV: the first line names the columns")
    columns: list[str] | None = Field(
        None, description="CSV/TSV without a header: the column names, in order"
    )
    text_column: str = Field("text", description="column holding the text")
    label_column: str = Field("label", description="column holding the label")
    labels: list[str] | None = Field(None, description="string labels in class order; others are quarantined")
    label_thresholds: list[float] | None = Field(
        None,
        description="numeric labels: class = number of thresholds <= value (e.g. [5.5] for 1-10 ratings)",
    )
    class_names: list[str] | None = Field(None, description="names of the threshold classes, in order")
    encoding: str = Field("utf-8", description="character encoding of the files (a Java charset name)")
    encoding_errors: Literal["quarantine", "replace"] = Field(
        "quarantine",
        description="UTF-8 files with invalid bytes: quarantine the records that hold them (the reason "
        "gives the file's byte offset), or keep them with U+FFFD in place of the bytes",
    )

    @model_validator(mode="after")
    def _one_label_mapping(self) -> TextDataConfig:
        if (self.labels is None) == (self.label_thresholds is None):
            raise ValueError("set exactly one of labels (string labels) or label_thresholds (numeric labels)")
        if self.label_thresholds is not None:
            if sorted(self.label_thresholds) != self.label_thresholds:
                raise ValueError("label_thresholds must be in increasing order")
            needed = len(self.label_thresholds) + 1
            if self.class_names is not None and len(self.class_names) != needed:
                raise ValueError(f"class_names must have {needed} names for {needed - 1} threshold(s)")
        if not self.header and self.format != "jsonl" and not self.columns:
            raise ValueError("files without a header need columns: [...]")
        if _python_codec(self.encoding) not in SPARK_CHARSETS:
            supported = ", ".join(SPARK_CHARSETS.values())
            raise ValueError(f"encoding: {self.encoding!r} is not one Spark reads ({supported}, or an alias)")
        return self

    @property
    def charset(self) -> str:
        """``encoding`` by the name Spark's readers take."""
        return SPARK_CHARSETS[_python_codec(self.encoding)]

    @property
    def is_utf8(self) -> bool:
        return self.charset == "utf-8"

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        if self.labels is not None:
            return list(self.labels)
        if self.class_names is not None:
            return list(self.class_names)
        return [f"class_{i}" for i in range(len(self.label_thresholds or []) + 1)]


class TextIngestConfig(Section):
    compact_files: int = Field(
        8,
        ge=1,
        description="an incremental ingest merges the ingested (or quarantined) files of under 65,536 "
        "records once there are more than this many",
    )


class TextPreprocessConfig(PreprocessConfig):
    vocab_size: int = Field(
        10_000, ge=3, description="vocabulary size, padding and out-of-vocabulary ids included"
    )
    max_len: int = Field(100, ge=1, description="sequences are padded or truncated to this many tokens")
    lowercase: bool = Field(True, description="lower-case text before tokenizing")
    html_unescape: bool = Field(True, description="turn HTML entities (&#039; &amp;) into characters first")


class LstmModelConfig(Section):
    architecture: Literal["lstm", "bilstm", "cnn", "bag"] = Field(
        "lstm",
        description="after the embedding: an LSTM, a bidirectional LSTM, convolutions of 5 tokens "
        "(max over the text) or the mean embedding and a dense layer",
    )
    embedding_dim: int = Field(128, ge=1, description="embedding size (that of model.embeddings' vectors)")
    lstm_units: int = Field(64, ge=1, description="units of the layer after the embedding")
    embeddings: str | None = Field(
        None,
        description="pre-trained word vectors (a word and its numbers per line, e.g. GloVe's .txt), "
        "local path or URI, aligned to the fitted vocabulary; unset: learned from scratch",
    )
    train_embeddings: bool = Field(True, description="fine-tune model.embeddings' vectors (false: frozen)")


class TextPipelineConfig(PipelineBase):
    pipeline: Literal["text_lstm"] = Field(description="which pipeline this config drives")
    data: TextDataConfig
    ingest: TextIngestConfig = Field(default_factory=TextIngestConfig)
    preprocess: TextPreprocessConfig = Field(default_factory=TextPreprocessConfig)
    model: LstmModelConfig = Field(default_factory=LstmModelConfig)
