"""Text ingest: messy CSV/TSV/JSON Lines files in, every record either written or quarantined with why."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipelines.core.catalog import Catalog
from pipelines.core.errors import DataError
from pipelines.kinds.text_lstm import ingest as text_ingest
from pipelines.kinds.text_lstm.schemas import TEXT_RECORDS
from tests.conftest import text_config

BOM = "\ufeff"
MULTI_LINE = 'A slow start, but\nthe ending "stuck" with me.\nWorth it.'
ENTITIES = "it&#039;s great &amp; fun"
PLAIN = ["Loved every minute", "Dull and far too long", "A fine cast", "Would not watch again"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def _uri(path: Path) -> str:
    return "file:" + str(path.resolve())  # the form Spark reports for local files


def _sorted(rows) -> list[tuple]:
    return sorted(rows, key=repr)  # records may be None


def _tables(spark, workdir: Path) -> tuple[list, list]:
    catalog = Catalog.for_workdir(workdir)
    ingested = spark.read.parquet(str(catalog.ingested))
    declared = [(f.name, f.dataType) for f in TEXT_RECORDS]
    assert [(f.name, f.dataType) for f in ingested.schema] == declared
    quarantine = spark.read.parquet(str(catalog.quarantine))
    assert quarantine.columns == TEXT_RECORDS.fieldNames()
    assert ingested.where("reason is not null").count() == 0
    assert quarantine.where("reason is null").count() == 0
    return (
        ingested.select("key", "path", "text", "label").collect(),
        quarantine.select("path", "record", "reason").collect(),
    )


@pytest.fixture
def messy_tsv(tmp_path) -> Path:
    """Reviews as people export them: BOM, quoted multi-line text, entities, blank and broken rows."""
    rows = [
        f"{BOM}review\tsentiment",
        '"A slow start, but\nthe ending ""stuck"" with me.\nWorth it."\tpositive',
        f"{ENTITIES}\tpositive",
        "",
        "only one field here",
        "\tnegative",
        '"   "\tpositive',
        "meh, it was fine\tneutral",
        f"{PLAIN[0]}\tpositive",
        f"{PLAIN[1]}\tnegative",
        f"{PLAIN[2]}\t positive ",
        f"{PLAIN[3]}\tnegative",
    ]
    return _write(tmp_path / "reviews.tsv", "\n".join(rows) + "\n")


def test_messy_tsv_quarantines_exactly_the_bad_records_and_keeps_good_text_intact(spark, tmp_path, messy_tsv):
    config = text_config(tmp_path / "work", "data.format=tsv")
    # A BOM left on the first header name would fail this run with "no column 'review'".
    report = text_ingest.run(config, lambda: spark, str(messy_tsv))

    # 10 records: the blank line is none, the three-line quoted review is one.
    counts = (report.records_seen, report.rows_written, report.rows_quarantined, report.classes)
    assert counts == (10, 6, 4, 2)
    assert report.spark_jobs > 0
    rows, quarantine = _tables(spark, config.workdir)
    assert _sorted((r.path, r.record, r.reason) for r in quarantine) == _sorted(
        [
            (_uri(messy_tsv), "only one field here", "expected 2 fields, found 1"),
            (_uri(messy_tsv), None, "empty text"),
            (_uri(messy_tsv), None, "empty text"),
            (_uri(messy_tsv), None, "label 'neutral' is not one of negative, positive"),
        ]
    )

    labels = {row.text: row.label for row in rows}
    assert labels == {
        MULTI_LINE: "positive",
        ENTITIES: "positive",
        PLAIN[0]: "positive",
        PLAIN[1]: "negative",
        PLAIN[2]: "positive",
        PLAIN[3]: "negative",
    }
    assert all(row.path == _uri(messy_tsv) for row in rows)
    assert all(row.key == hashlib.sha256(row.text.encode()).hexdigest() for row in rows)
    assert not any(BOM in (row.text + row.label) for row in rows)
    saved = json.loads(Catalog.for_workdir(config.workdir).ingest_report.read_text())
    assert {k: saved[k] for k in ("records_seen", "rows_written", "rows_quarantined", "classes")} == {
        "records_seen": 10,
        "rows_written": 6,
        "rows_quarantined": 4,
        "classes": 2,
    }


def test_a_row_with_too_many_fields_is_quarantined_not_truncated(spark, tmp_path):
    folder = tmp_path / "reviews"
    _write(folder / "a.tsv", "review\tsentiment\ngood one\tpositive\ngreat\tpositive\textra\tmore\n")
    _write(folder / "b.tsv", "review\tsentiment\nbad one\tnegative\ntrailing tab\tnegative\t\n")
    config = text_config(tmp_path / "work", "data.format=tsv")
    report = text_ingest.run(config, lambda: spark, str(folder))

    rows, quarantine = _tables(spark, config.workdir)
    assert sorted(row.text for row in rows) == ["bad one", "good one"]
    assert sorted((Path(r.path).name, r.record, r.reason) for r in quarantine) == [
        ("a.tsv", "great\tpositive\textra\tmore", "expected 2 fields, found 4"),
        ("b.tsv", "trailing tab\tnegative\t", "expected 2 fields, found 3"),
    ]
    assert (report.records_seen, report.rows_written, report.rows_quarantined) == (4, 2, 2)


def test_headerless_csv_takes_its_column_names_from_the_config(spark, tmp_path):
    source = _write(
        tmp_path / "reviews.csv",
        f'{BOM}"Hello, world",positive,1\n"bad, ""really"" bad",negative,2\n"Commas, commas",positive,"3"\n',
    )
    config = text_config(
        tmp_path / "work",
        "data.format=csv",
        "data.header=false",
        "data.columns=[body,grade,id]",
        "data.text_column=body",
        "data.label_column=grade",
    )
    report = text_ingest.run(config, lambda: spark, str(source))

    rows, quarantine = _tables(spark, config.workdir)
    assert sorted((row.text, row.label) for row in rows) == [
        ("Commas, commas", "positive"),
        ("Hello, world", "positive"),
        ('bad, "really" bad', "negative"),
    ]
    assert quarantine == []
    assert (report.records_seen, report.rows_written, report.classes) == (3, 3, 2)


def test_json_lines_with_numeric_ratings_are_mapped_by_thresholds(spark, tmp_path):
    lines = [
        '{"review": "loved it", "rating": 9}',
        '{"review": "hated it", "rating": "2"}',
        '{"review": "right on the threshold", "rating": 5.5}',
        '{"review": "just below", "rating": 5.4}',
        '{"review": "cut off mid-line", "rat',
        '{"review": "no number", "rating": "ten"}',
        '{"review": "no rating at all"}',
        "",
    ]
    source = _write(tmp_path / "ratings.jsonl", "\n".join(lines) + "\n")
    config = text_config(
        tmp_path / "work",
        "data.format=jsonl",
        "data.labels=null",
        "data.label_thresholds=[5.5]",
        "data.class_names=[negative,positive]",
        "data.label_column=rating",
    )
    report = text_ingest.run(config, lambda: spark, str(source))

    rows, quarantine = _tables(spark, config.workdir)
    assert sorted((row.text, row.label) for row in rows) == [
        ("hated it", "negative"),
        ("just below", "negative"),
        ("loved it", "positive"),
        ("right on the threshold", "positive"),
    ]
    assert _sorted((r.record, r.reason) for r in quarantine) == _sorted(
        [
            (None, "label 'ten' is not a number"),
            (None, "missing label"),
            ('{"review": "cut off mid-line", "rat', "malformed JSON record"),
        ]
    )
    assert (report.records_seen, report.rows_written, report.rows_quarantined) == (7, 4, 3)


def test_missing_source_is_a_clear_error(spark, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        text_ingest.run(text_config(tmp_path / "work"), lambda: spark, str(tmp_path / "nope.tsv"))
    hidden = _write(tmp_path / "in" / ".draft.tsv", "review\tsentiment\n").parent
    with pytest.raises(DataError, match="no files found"):
        text_ingest.run(text_config(tmp_path / "work"), lambda: spark, str(hidden))


def test_a_csv_file_whose_name_spark_takes_as_a_pattern_is_a_clear_error(spark, tmp_path):
    source = _write(tmp_path / "in" / "draft[1].tsv", "review\tsentiment\nfine\tpositive\n").parent
    with pytest.raises(DataError, match=r"draft\[1\].tsv: Spark's CSV reader takes"):
        text_ingest.run(text_config(tmp_path / "work"), lambda: spark, str(source))


def test_header_without_the_text_column_is_a_clear_error(spark, tmp_path):
    source = _write(tmp_path / "reviews.tsv", "body\tsentiment\nfine\tpositive\n")
    with pytest.raises(DataError, match="no column 'review'"):
        text_ingest.run(text_config(tmp_path / "work"), lambda: spark, str(source))


def test_no_usable_record_is_an_error(spark, tmp_path):
    source = _write(tmp_path / "reviews.tsv", "review\tsentiment\nfine\tmaybe\n")
    with pytest.raises(DataError, match="no usable records"):
        text_ingest.run(text_config(tmp_path / "work"), lambda: spark, str(source))


def _ingested(workdir: Path) -> set[tuple[str, str, str]]:
    """(file name, text, label) of every ingested record, read with pyarrow."""
    import pyarrow.parquet as pq

    from pipelines.io import parquet

    rows = set()
    for file in parquet.data_files(Catalog.for_workdir(workdir).ingested):
        table = pq.read_table(file.removeprefix("file:"), columns=["path", "text", "label"])
        for path, text, label in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
            rows.add((path.rsplit("/", 1)[1], text, label))
    return rows


def _rows(location, columns: list[str]) -> list[tuple]:
    """``columns`` of every row of the data set at ``location``, read with pyarrow."""
    import pyarrow.parquet as pq

    from pipelines.io import parquet

    rows = []
    for file in parquet.data_files(location):
        table = pq.read_table(file.removeprefix("file:"), columns=columns)
        rows += zip(*(table.column(c).to_pylist() for c in columns), strict=True)
    return rows


def test_an_increment_reads_only_the_changed_files_and_keeps_the_vocabulary(spark, tmp_path):
    import os
    import re

    from pipelines.core.catalog import SPLITS
    from pipelines.ingest import increments
    from pipelines.ingest import stage as ingest_stage
    from pipelines.io import atomic, parquet
    from pipelines.preprocess import stage as preprocess_stage

    source = tmp_path / "reviews"
    words = ["great", "dull", "fine", "slow", "bright", "long", "warm", "flat"]
    for night in range(8):  # night 0: eight files; the folder nests, a name has a space
        _write(
            source / ("old" if night % 2 else "") / f"day {night}.tsv",
            "review\tsentiment\n"
            + "".join(
                f"{w} film {night} {i}\t{'positive' if i % 2 else 'negative'}\n" for i, w in enumerate(words)
            ),
        )
    settings = (f"data.source={source}", "data.labels=[negative,positive]")
    config = text_config(tmp_path / "work", *settings)
    catalog = Catalog.for_workdir(config.workdir)
    # A task a file, as Spark reads files of more than a few MB: the whole ingest writes a data
    # file per source file (small files are packed two or four a task otherwise).
    spark.conf.set("spark.sql.files.maxPartitionBytes", "1024")
    try:
        first = ingest_stage.run(config).summary["ingest"]
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert first["increment"]["whole"] and first["records_seen"] == 64
    preprocess_stage.run(config)
    vocabulary = atomic.read_json(catalog.transform)
    split_files = {uri for name in SPLITS for uri in parquet.data_files(catalog.split(name))}
    ingested_files = set(parquet.data_files(catalog.ingested))

    _write(source / "new day.tsv", "review\tsentiment\nnew words here\tpositive\nbroken\tmaybe\n")
    changed = source / "old" / "day 1.tsv"
    _write(changed, "review\tsentiment\nrewritten review\tnegative\n")
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    (source / "day 2.tsv").unlink()
    second = ingest_stage.run(config).summary["ingest"]
    increment = second["increment"]
    assert [increment[key] for key in ("added", "changed", "removed", "unchanged")] == [1, 1, 1, 6]
    assert [increment[key] for key in ("files_read", "rows_written", "rows_quarantined")] == [2, 2, 1]
    assert [second[key] for key in ("records_seen", "rows_written", "rows_quarantined")] == [51, 50, 1]
    whole = text_config(tmp_path / "whole", f"data.source={source}", "data.labels=[negative,positive]")
    text_ingest.run(whole, lambda: spark, str(source))
    assert _ingested(config.workdir) == _ingested(whole.workdir)  # the same records as reading it all
    snapshot = increments.latest_snapshot(catalog)[1]  # a row per file and data file holding its records
    assert sorted(snapshot["relpath"].to_pylist()) == [
        "day 0.tsv",
        "day 4.tsv",
        "day 6.tsv",
        "new day.tsv",
        "new day.tsv",
        "old/day 1.tsv",
        "old/day 3.tsv",
        "old/day 5.tsv",
        "old/day 7.tsv",
    ]

    summary = preprocess_stage.run(config).summary["preprocess"]
    assert summary["transform_kept"] and summary["snapshot"] == 2
    assert atomic.read_json(catalog.transform) == vocabulary
    # Only the ingested files the increment wrote were encoded; the split files of the others stayed
    # as written (six of the eight).
    encoded = atomic.read_json(catalog.preprocess_report)["encoded"]
    now_ingested = set(parquet.data_files(catalog.ingested))
    assert encoded["whole"] is False and encoded["files_encoded"] == len(now_ingested - ingested_files) >= 1
    untouched = {
        hashlib.sha256(uri.rsplit("/", 1)[1].encode()).hexdigest()[:16]
        for uri in now_ingested & ingested_files
    }
    kept = {uri for uri in split_files if re.search(r"o([0-9a-f]{16})-part-", uri).group(1) in untouched}
    now = {uri for name in SPLITS for uri in parquet.data_files(catalog.split(name))}
    assert len(untouched) == 6 and kept <= now and encoded["split_files_deleted"] >= 1
    in_splits = sorted(_rows(catalog.split(name), ["key", "text"]) for name in SPLITS)
    assert sorted(sum(in_splits, [])) == sorted(_rows(catalog.ingested, ["key", "text"]))

    nightly = text_config(config.workdir, *settings, "ingest.compact_files=2")
    for night in range(3):  # small nights: their files are merged past ingest.compact_files
        _write(source / f"night {night}.tsv", f"review\tsentiment\nnight {night}\tpositive\n")
        assert ingest_stage.run(nightly).summary["ingest"]["increment"]["files_read"] == 1
    assert len(parquet.data_files(catalog.ingested)) <= 3
    assert len(_ingested(config.workdir)) == 53
    preprocess_stage.run(nightly)
    # A preprocess that died moving an increment's files in: an origin in some splits only.
    Path(parquet.data_files(catalog.split("train"))[-1].removeprefix("file:")).unlink()
    preprocess_stage.run(nightly)
    assert atomic.read_json(catalog.preprocess_report)["encoded"]["whole"]  # encoded again, whole
    in_splits = sorted(_rows(catalog.split(name), ["key", "text"]) for name in SPLITS)
    assert sorted(sum(in_splits, [])) == sorted(_rows(catalog.ingested, ["key", "text"]))

    forced = ingest_stage.run(config, force=True).summary["ingest"]
    assert forced["increment"]["whole"] and forced["increment"]["files_read"] == 11
    assert forced["records_seen"] == 54 and increments.snapshot_numbers(catalog) == [1]
