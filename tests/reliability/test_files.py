"""Text files as they come: invalid UTF-8, other encodings, empty files; each record and file is
accounted for, and nothing is silently changed."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipelines.core.catalog import Catalog
from pipelines.core.errors import ConfigError
from pipelines.ingest import stage as ingest_stage
from pipelines.pipeline.config_files import load_config
from tests.conftest import text_config

HEADER = "review\tsentiment\n"


def _ingest(tmp_path, *overrides: str):
    config = text_config(tmp_path / "work", f"data.source={tmp_path / 'raw'}", *overrides)
    summary = ingest_stage.run(config).summary["ingest"]
    catalog = Catalog.for_workdir(config.workdir)
    written = pq.read_table(str(catalog.ingested)).to_pylist()
    quarantined = pq.read_table(str(catalog.quarantine)).to_pylist()
    return summary, written, quarantined


def _write_raw(tmp_path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    good = HEADER + "a fine film\tpositive\n"
    bad_line = b"a dull \xff\xfe film\tnegative\n"
    content = good.encode() + bad_line + "caf\u00e9 noir, superb\tpositive\n".encode()
    (raw / "mixed reviews.tsv").write_bytes(content)  # a space: Spark reports the path URL-encoded
    (raw / "empty.tsv").write_bytes(b"")
    (raw / "more.tsv").write_text(HEADER + "awful\tnegative\n", encoding="utf-8")


def test_invalid_utf8_is_quarantined_with_the_byte_offset_and_empty_files_are_counted(spark, tmp_path):
    _write_raw(tmp_path)

    summary, written, quarantined = _ingest(tmp_path)

    assert (summary["records_seen"], summary["rows_written"], summary["rows_quarantined"]) == (4, 3, 1)
    assert (summary["files_seen"], summary["empty_files"]) == (3, 1)
    offset = len((HEADER + "a fine film\tpositive\n").encode()) + len(b"a dull ")
    assert quarantined[0]["reason"] == f"invalid UTF-8 (the file's first invalid byte is at offset {offset})"
    assert sorted(row["text"] for row in written) == ["a fine film", "awful", "caf\u00e9 noir, superb"]
    assert not [row for row in written if "\ufffd" in row["text"]]


def test_replace_keeps_invalid_bytes_as_replacement_characters_when_asked(spark, tmp_path):
    _write_raw(tmp_path)

    summary, written, _ = _ingest(tmp_path, "data.encoding_errors=replace")

    assert (summary["rows_written"], summary["rows_quarantined"]) == (4, 0)
    assert "a dull \ufffd\ufffd film" in {row["text"] for row in written}


def test_a_configured_encoding_decodes_other_files(spark, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "latin.tsv").write_bytes((HEADER + "caf\u00e9 cr\u00e8me, superb\tpositive\n").encode("latin-1"))

    _, written, quarantined = _ingest(tmp_path, "data.encoding=latin-1")

    assert [row["text"] for row in written] == ["caf\u00e9 cr\u00e8me, superb"] and not quarantined


def test_an_unknown_encoding_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data: encoding: 'utf-9' is not one Spark reads"):
        load_config("conf/text_lstm.yaml", ["data.encoding=utf-9"])
