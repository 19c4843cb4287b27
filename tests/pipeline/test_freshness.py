"""Re-runs: a stage is skipped exactly when its data, upstream output and config are unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.core.catalog import Catalog
from pipelines.ingest.stage import source_of
from pipelines.pipeline import freshness, runner
from tests.conftest import image_config


def _images(folder: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{index}.png")
    return folder


@pytest.fixture
def ingested(tmp_path, spark):
    """A workdir whose ingest succeeded once on a small image folder: (config, source)."""
    source = _images(tmp_path / "raw")
    config = image_config(tmp_path / "work", f"data.source={source}")
    summary = runner.run_stage("ingest", config)
    assert summary["ingest"]["files_seen"] == 8 and "skipped" not in summary
    return config, source


def _check(config, **overrides):
    config = config.model_copy(update=overrides) if overrides else config
    return freshness.check("ingest", config, source=source_of(config))


def test_an_unchanged_stage_is_skipped_with_its_recorded_summary(ingested):
    config, _ = ingested
    assert _check(config).skip
    summary = runner.run_stage("ingest", config)
    assert summary["skipped"] == ["ingest"] and summary["ingest"]["rows_written"] == 8
    assert not freshness.check("ingest", config, source=source_of(config), force=True).skip


def test_changed_data_config_or_outputs_make_it_run_again(ingested):
    config, source = ingested
    (source / "dog" / "extra.png").write_bytes((source / "dog" / "0.png").read_bytes())
    check = _check(config)
    assert not check.skip and check.reason.startswith("the data changed (9 files"), check.reason
    (source / "dog" / "extra.png").unlink()
    assert _check(config).skip

    later = os.stat(source / "cat" / "0.png").st_mtime_ns + 10**9  # rewritten in place, same size
    os.utime(source / "cat" / "0.png", ns=(later, later))
    assert _check(config).reason.startswith("the data changed")
    runner.run_stage("ingest", config)
    assert _check(config).skip

    resized = config.model_copy(update={"ingest": config.ingest.model_copy(update={"image_size": 16})})
    assert _check(resized).reason == "config changed: ingest.image_size (32 -> 16)"
    moved = config.model_copy(update={"spark": config.spark.model_copy(update={"app_name": "other"})})
    assert _check(moved).skip  # how Spark runs is not an input

    shutil.rmtree(Catalog.for_workdir(config.workdir).quarantine)
    assert _check(config).reason == "its outputs changed or are missing"


def test_each_stage_depends_on_its_own_keys_and_train_on_the_rest(ingested):
    config, _ = ingested
    assert set(freshness.stage_keys("ingest", config)) >= {"data.source", "ingest.image_size"}
    assert set(freshness.stage_keys("preprocess", config)) >= {"preprocess.split.train"}
    train = freshness.stage_keys("train", config)
    assert {"train.epochs", "model.filters", "mlflow.experiment", "pipeline"} <= set(train)
    assert not [key for key in train if key.split(".")[0] in ("data", "ingest", "preprocess", "spark")]
    assert "train.resume" not in train and "workdir" not in train
