"""Scale: 32,000 small JPEGs through ingest and preprocess with the default settings, every file
accounted for (at this size the earlier ingest ran out of JVM heap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.core.catalog import SPLITS, Catalog
from pipelines.io import parquet
from pipelines.kinds.image_cnn.demo import write_synthetic_images
from tests.support.cli import dlfusion

ROOT = Path(__file__).resolve().parents[2]
FILES = 32_000


def _dlfusion(stage: str, workdir: Path, *overrides: str) -> dict:
    """Run a stage the way a user does (its own process, the shipped config, default settings)."""
    summary = workdir / f"{stage}-summary.json"
    args = (stage, "conf/image_cnn.yaml", f"workdir={workdir}", *overrides, "--summary-json", str(summary))
    done = dlfusion(*args, timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(summary.read_text())


@pytest.mark.slow
def test_32000_jpegs_with_default_settings_every_file_accounted_for(tmp_path):
    source = write_synthetic_images(tmp_path / "images", FILES, size=32)
    (source / "class_00" / "empty.jpg").write_bytes(b"")
    (source / "class_01" / "notes.jpg").write_text("not an image")
    jpeg = next((source / "class_02").glob("*.jpg")).read_bytes()
    (source / "class_02" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    workdir = tmp_path / "work"

    ingested = _dlfusion("ingest", workdir, f"data.source={source}")["ingest"]
    assert ingested["files_seen"] == FILES + 3
    assert (ingested["rows_written"], ingested["rows_quarantined"], ingested["classes"]) == (FILES, 3, 10)

    splits = _dlfusion("preprocess", workdir)["splits"]
    catalog = Catalog.for_workdir(workdir)
    assert sum(splits.values()) == FILES
    for name in SPLITS:
        assert sum(parquet.row_group_sizes(catalog.split(name))) == splits[name]
    assert sum(parquet.row_group_sizes(catalog.quarantine)) == 3
