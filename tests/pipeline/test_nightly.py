"""The nightly story: a source folder that grows, one bad night, and a champion that moves only to
a better model (real Spark, Horovod ranks and MLflow registry)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from pipelines.core.errors import ValidationError
from pipelines.ingest import stage as ingest_stage
from pipelines.kinds.image_cnn.demo import write_digits_images
from pipelines.preprocess import stage as preprocess_stage
from pipelines.promote import promotion
from pipelines.train import driver
from tests.conftest import image_config

pytestmark = pytest.mark.slow  # two trainings on Horovod ranks


def _night(workdir, source, spark, ranks) -> dict:
    """One night of the cron line: ingest, preprocess (profile and validate), train from the
    champion, promote through the gate."""
    config = image_config(
        workdir,
        f"data.source={source}",
        "mlflow.registered_model=nightly",
        "train.init_from=champion",
        "train.epochs=3",
        "validate.max_drift=0.25",
        "retention.checkpoints=1",
    )
    ingest_stage.run(config)
    preprocess_stage.run(config)
    result = driver.run(config, ranks)
    return {"run_id": result.run_id, **promotion.run(config, lambda: spark)}


def test_two_nights_a_bad_one_stops_at_validation_and_the_good_one_trains_on_the_grown_data(
    tmp_path, spark, ranks
):
    source, workdir = tmp_path / "incoming", tmp_path / "work"
    write_digits_images(source)
    client = MlflowClient(image_config(workdir).tracking_uri)

    first = _night(workdir, source, spark, ranks)
    assert first["decision"] == "promoted" and first["champion_version"] is None
    assert "dlfusion.init_from" not in client.get_run(first["run_id"]).data.tags  # no champion yet

    # Bad night 1: 40 of the 3s were also filed as 8s (2% of the rows). Bad night 2: the 9s did not arrive.
    clashing = sorted((source / "3").iterdir())[:40]
    for image in clashing:
        shutil.copy(image, source / "8" / f"also_{image.name}")
    with pytest.raises(ValidationError) as clash:
        _night(workdir, source, spark, ranks)
    assert clash.value.rule == "max_cross_label_fraction"
    for image in clashing:
        (source / "8" / f"also_{image.name}").unlink()
    nines = tmp_path / "nines"
    shutil.move(source / "9", nines)
    with pytest.raises(ValidationError) as missing:
        _night(workdir, source, spark, ranks)
    assert missing.value.rule == "max_drift" and "class distribution" in missing.value.measured
    shutil.move(nines, source / "9")
    assert len(client.search_runs([client.get_run(first["run_id"]).info.experiment_id])) == 1  # none trained

    # The good night: the 9s are back and 40 new images arrived (brightened copies: new content).
    for digit in "0123":
        for image in sorted((source / digit).iterdir())[:10]:
            pixels = np.asarray(Image.open(image), np.uint16)
            Image.fromarray(np.minimum(pixels + 2, 255).astype(np.uint8)).save(
                source / digit / f"new_{image.name}"
            )
    second = _night(workdir, source, spark, ranks)
    tags = client.get_run(second["run_id"]).data.tags
    assert tags["dlfusion.init_from"] == "models:/nightly@champion"
    assert (
        client.get_run(second["run_id"]).data.params["data.train.rows"]
        != client.get_run(first["run_id"]).data.params["data.train.rows"]
    )  # trained on the grown data
    champion = str(client.get_model_version_by_alias("nightly", "champion").version)
    better = second["margin"] >= 0  # promote.min_delta is 0; the majority baseline is far below both
    assert second["decision"] == ("promoted" if better else "kept"), second
    assert champion == (second["version"] if better else first["version"])
    kept = [folder.name for folder in (workdir / "checkpoints").iterdir()]
    assert kept == [second["run_id"]]  # retention.checkpoints=1: the model is in MLflow anyway
