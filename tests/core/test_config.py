"""Config: one typed object from YAML + overrides; every problem names its key, CLI exits 2."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipelines.core.errors import ConfigError, DataError, TrainingError
from pipelines.pipeline.config_files import load_config
from tests.conftest import IMAGE_CONFIG, ROOT
from tests.support.cli import dlfusion


def test_shipped_config_loads_with_base_defaults_merged():
    config = load_config(IMAGE_CONFIG)
    assert config.pipeline == "image_cnn"
    assert config.train.num_proc == 2 and config.train.launcher == "local"
    assert config.spark.master is None  # local[*] unless spark-submit or the config says otherwise
    assert config.mlflow.experiment == "image_cnn"  # pipeline file overrides base.yaml
    assert config.tracking_uri == f"sqlite:///{(config.workdir / 'mlflow.db').resolve()}"


def test_overrides_use_dotted_keys_and_yaml_types():
    config = load_config(IMAGE_CONFIG, ["train.epochs=3", "train.resume=true", "data.source=/data/imgs"])
    assert config.train.epochs == 3 and config.train.resume is True
    assert config.data.source == "/data/imgs"


@pytest.mark.parametrize(
    "override,key,words",
    [
        ("train.epochz=2", "train.epochz", "unknown key (valid keys here: augment, batch_size"),
        ("train.epochs=many", "train.epochs", "valid integer"),
        ("train.launcher=yarn", "train.launcher", "'local' or 'spark'"),
        ("ingest.image_size=1000", "ingest.image_size", "less than or equal to 224"),
        ("preprocess.split.train=0.5", "preprocess.split", "must be 1"),
        ("nonsense=1", "nonsense", "unknown key"),
        ("train.epochs", "train.epochs", "KEY=VALUE"),
        ("train.epochs.deep=1", "train.epochs", "is a value, not a section"),
        ("model.weights=imagenet.h5", "config", "model.weights needs a model.backbone other than seed_cnn"),
        ("model.backbone=vgg16", "model.backbone", "'seed_cnn', 'mobilenet_v3_small' or 'resnet50'"),
    ],
)
def test_config_errors_name_the_key(override, key, words):
    with pytest.raises(ConfigError) as caught:
        load_config(IMAGE_CONFIG, [override])
    assert caught.value.key == key
    assert words in str(caught.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_errors_survive_pickling_across_processes():
    for error in (ConfigError("a.b", "bad"), DataError("/x", "broken"), TrainingError(1, "boom")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


def test_cli_bad_key_is_one_line_and_exit_code_2():
    result = dlfusion("train", "conf/image_cnn.yaml", "train.epochz=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dlfusion: error: config error: train.epochz: unknown key (valid keys here: augment, batch_size, "
        "class_weight, early_stopping, epochs, fine_tune_learning_rate, freeze_backbone_epochs, init_from, "
        "launcher, learning_rate, num_proc, precision, reader_workers, resume, seed, shuffle_buffer, "
        "stall_timeout_s, start_timeout_s, warmup_epochs)"
    ]


def test_cli_missing_config_file_exits_2(tmp_path):
    result = dlfusion("ingest", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such config file" in result.stderr


def test_jobs_are_thin_entry_points():
    for job in (ROOT / "jobs").glob("*.py"):
        assert len(job.read_text().splitlines()) < 40
        assert f'main(["{job.stem}"' in job.read_text()  # one per stage: tests/core/test_stages.py


def test_cli_data_error_is_one_line_exit_1(tmp_path):
    result = dlfusion("ingest", "conf/image_cnn.yaml", f"workdir={tmp_path}", f"data.source={tmp_path}/none")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"dlfusion: error: {tmp_path}/none: data.source does not exist"
    )
    assert "Traceback" not in result.stderr
    assert Path(tmp_path).is_dir()


def test_spark_settings_with_dots_are_one_key(tmp_path):
    config = load_config(IMAGE_CONFIG, ["spark.conf.spark.driver.memory=4g", "spark.conf.spark.sql.x=1"])
    assert config.spark.conf == {"spark.driver.memory": "4g", "spark.sql.x": "1"}


def test_the_configuration_reference_is_generated_from_the_models_and_current():
    from pipelines.pipeline import config_reference

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == config_reference.reference(), (
        "stale: python -m pipelines.pipeline.config_reference > docs/configuration.md"
    )
    assert "| `train.epochs` | int | `10` | number of epochs |" in page
