"""Transfer learning on a keras.applications backbone, with weights this project trains itself:
pre-trained on the digits 0-4, fine-tuned on a few hundred images of the digits 5-9."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.evaluate import evaluation
from pipelines.ingest import stage as ingest_stage
from pipelines.kinds.image_cnn.demo import write_digits_images
from pipelines.kinds.image_cnn.ingest import decode_image
from pipelines.preprocess import stage as preprocess_stage
from pipelines.track import pyfunc
from pipelines.train import driver
from tests.conftest import IMAGE_CONFIG, image_config

# 7 steps an epoch on the new classes: at the default rate with a warm-up, a fresh head on the frozen
# backbone's features (about 0.1 in size) barely moves in its one frozen epoch (measured: training
# accuracy 0.10, validation at chance), so the first epochs' comparison would be noise. Both models
# learn at this rate; the unfrozen backbone at a tenth of it (the default fine-tuning rate).
FEW_STEPS = ("train.learning_rate=0.01", "train.warmup_epochs=0")
BACKBONE = ("model.backbone=mobilenet_v3_small", "train.epochs=3", "train.batch_size=16")


def _prepared(tmp_path: Path, name: str, classes: range, per_class: int, tracking_uri: str, *overrides: str):
    source = write_digits_images(tmp_path / f"{name}-raw", classes, per_class)
    config = image_config(
        tmp_path / name, f"data.source={source}", f"mlflow.tracking_uri={tracking_uri}", *BACKBONE, *overrides
    )
    ingest_stage.run(config)
    preprocess_stage.run(config)
    return config


def test_backbone_weights_load_from_a_weights_file_and_from_a_model_and_say_when_they_do_not_fit(tmp_path):
    import keras

    from models.backbones import build_backbone_classifier, find_backbone, load_backbone_weights

    def backbone(name: str = "mobilenet_v3_small", classes: int = 3):
        return find_backbone(build_backbone_classifier((32, 32, 3), classes, name, frozen_statistics=True))

    trained = backbone()
    trained.set_weights([w + 0.5 for w in trained.get_weights()])
    trained.save_weights(tmp_path / "mobilenet.weights.h5")
    from_file = backbone()
    load_backbone_weights(from_file, str(tmp_path / "mobilenet.weights.h5"))
    inputs = keras.Input((32, 32, 3))  # a saved model holding a `backbone`, with another head
    keras.Model(inputs, keras.layers.Dense(2)(trained(inputs))).save(tmp_path / "model.keras")
    from_model = backbone(classes=7)  # only the backbone is taken
    load_backbone_weights(from_model, str(tmp_path / "model.keras"))
    for loaded in (from_file, from_model):
        pairs = zip(loaded.get_weights(), trained.get_weights(), strict=True)
        assert all(np.array_equal(a, b) for a, b in pairs)

    with pytest.raises(ValueError, match="another architecture") as wrong:
        load_backbone_weights(backbone("resnet50"), str(tmp_path / "model.keras"))
    assert "\n" not in str(wrong.value)
    with pytest.raises(ValueError, match="cannot load") as wrong:
        load_backbone_weights(backbone("resnet50"), str(tmp_path / "mobilenet.weights.h5"))
    assert "\n" not in str(wrong.value)


@pytest.mark.slow  # three trainings on Horovod ranks
def test_a_backbone_fine_tuned_from_its_own_pretraining_beats_the_same_model_from_scratch(
    tmp_path, spark, ranks, monkeypatch
):
    # One tracking store for both workdirs, set explicitly: MLflow then keeps artifacts in ./mlruns
    # of the working directory, which must not be the repository.
    monkeypatch.chdir(tmp_path)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _prepared(tmp_path, "zero-to-four", range(5), 1000, tracking_uri)
    pretrained = driver.run(first, ranks)

    scratch_config = _prepared(tmp_path, "five-to-nine", range(5, 10), 60, tracking_uri, *FEW_STEPS)
    scratch = driver.run(scratch_config, ranks)
    fine_tune_config = image_config(
        scratch_config.workdir,
        f"data.source={scratch_config.data.source}",
        f"mlflow.tracking_uri={tracking_uri}",
        *BACKBONE,
        f"model.weights=runs:/{pretrained.run_id}/model",
        "train.freeze_backbone_epochs=1",
        *FEW_STEPS,
    )
    fine_tuned = driver.run(fine_tune_config, ranks)

    # Every rank ends with the same model (the driver raises otherwise), the backbone frozen for
    # the first epoch only; the pre-trained features already separate the new classes better then.
    tuned, fresh = fine_tuned.history["val_accuracy"], scratch.history["val_accuracy"]
    print(f"val accuracy by epoch: fine-tuned {tuned}, from scratch {fresh}")  # docs/kinds.md's (-s)
    assert len(set(fine_tuned.rank_digests)) == 1 and len(tuned) == len(fresh) == 3
    assert tuned[0] > fresh[0] and tuned[-1] > fresh[-1] + 0.2
    # The test split on the ranks (Spark tasks load the same model in `dlfusion score` below).
    metrics = evaluation.run(fine_tune_config, lambda: spark, fine_tuned.run_id, pool=ranks)
    assert metrics["test_accuracy"] > 0.4 and metrics["test_macro_f1_lift"] > 0.2  # chance: 0.2
    # Served as every image model is: raw uint8 images in, probabilities of the 5 new classes out,
    # the same in `dlfusion score`'s Spark tasks as from the pyfunc here.
    source = Path(scratch_config.data.source)
    picked = sorted(str(path.relative_to(source)) for path in source.glob("*/*.png"))[::30]
    output = tmp_path / "scores"
    arguments = [f"workdir={scratch_config.workdir}", "spark.master=local[2]", *BACKBONE]
    arguments += [f"mlflow.tracking_uri={tracking_uri}", f"model_uri={fine_tuned.model_uri}"]
    assert (
        cli.main(["score", str(IMAGE_CONFIG), *arguments, f"data.source={source}", f"output={output}"]) == 0
    )
    scored = pq.read_table(str(output / "predictions")).to_pandas().set_index("key").loc[picked]
    in_spark = np.array([[dict(p)[str(c)] for c in range(5, 10)] for p in scored["probabilities"]])
    images = np.stack(
        [np.frombuffer(decode_image((source / key).read_bytes(), 32), np.uint8) for key in picked]
    )
    model = pyfunc.load_model(fine_tuned.model_uri, tracking_uri)
    probabilities = np.asarray(model.predict(images.reshape(-1, 32, 32, 3)))
    assert probabilities.shape == (len(picked), 5) and np.allclose(probabilities, in_spark, atol=1e-5)
