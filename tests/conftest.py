"""Shared fixtures: one real local SparkSession, configs, and a preprocessed digits workdir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.core.config import PipelineConfig, SparkConfig
from pipelines.ingest import stage as ingest_stage
from pipelines.pipeline.config_files import load_config
from pipelines.preprocess import stage as preprocess_stage
from pipelines.runtime.logs import setup_logging

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CONFIG = ROOT / "conf" / "image_cnn.yaml"
TEXT_CONFIG = ROOT / "conf" / "text_lstm.yaml"

setup_logging()


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Order and group the suite for ``make test``'s workers (``--dist loadgroup``):

    - in each module, the tests that use a module-scoped fixture (a trained model, a server) form one
      group, so that one worker sets the fixture up once instead of every worker that runs one of them;
    - slow tests first (stable otherwise): the longest work starts while the fast tests are left to
      fill the gaps, so both workers finish together instead of one waiting on a late slow test.
    """
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        shared = definitions and any(
            fixture.scope == "module" for defs in definitions.name2fixturedefs.values() for fixture in defs
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def image_config(workdir: Path, *overrides: str) -> PipelineConfig:
    """The shipped image pipeline config, pointed at ``workdir``, with overrides."""
    return load_config(IMAGE_CONFIG, [f"workdir={workdir}", "spark.master=local[2]", *overrides])


def text_config(workdir: Path, *overrides: str) -> PipelineConfig:
    """The shipped text pipeline config, pointed at ``workdir``, with overrides."""
    return load_config(TEXT_CONFIG, [f"workdir={workdir}", "spark.master=local[2]", *overrides])


def spark_must_not_start(why: str):
    """A stage's ``start_spark`` for a test in which Spark must not start: calling it fails the test,
    saying ``why``."""

    def start_spark():
        raise AssertionError(f"Spark started: {why}")

    return start_spark


@pytest.fixture(scope="session")
def spark():
    from pipelines.runtime.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", app_name="dlfusion-tests"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ranks():
    """The local launcher's ranks for the default training settings (2 ranks), started once and
    shared by the tests that train normally (``driver.run(config, ranks)``): each such training skips
    the ranks' start, TensorFlow's import included. A test that kills a rank, or changes the rank
    count or their environment (stall timeouts), starts its own."""
    from pipelines.train.launchers import RankPool

    with RankPool(image_config(Path("unused")).train) as pool:
        yield pool


@pytest.fixture(scope="session")
def digits_workdir(tmp_path_factory, spark) -> Path:
    """A workdir holding the ingested and preprocessed digits demo (read-only: copy it to change it)."""

    workdir = tmp_path_factory.mktemp("digits")
    config = image_config(workdir)
    ingest_stage.run(config)
    preprocess_stage.run(config)
    return workdir


@pytest.fixture
def trainable_workdir(digits_workdir, tmp_path) -> Path:
    """A private copy of the preprocessed digits workdir, for a test that trains."""
    target = tmp_path / "work"
    shutil.copytree(digits_workdir, target)
    return target
