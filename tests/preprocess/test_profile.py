"""The data profile and the validate.* rules: the arithmetic alone, then on planted image trees
through ingest and preprocess (a real SparkSession), then the command a user runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import functions as F

from pipelines.core.catalog import Catalog
from pipelines.core.config import ValidateConfig
from pipelines.core.errors import ValidationError
from pipelines.kinds.image_cnn import ingest, preprocess
from pipelines.pipeline.config_files import load_config
from pipelines.preprocess import profile
from pipelines.preprocess.splits import split_names
from tests.conftest import IMAGE_CONFIG, image_config
from tests.support.cli import dlfusion


def _profile(classes: dict[str, int], train: dict[str, int] | None = None, **duplicates: int) -> dict:
    rows = sum(classes.values())
    found = {key: duplicates.get(key, 0) for key in ("repeated", "cross_label", "conflicting", "cross_split")}
    return {
        "rows": rows,
        "classes": classes,
        "splits": {"train": train or classes, "val": {}, "test": {}},
        "duplicates": {key: {"rows": n, "fraction": n / rows} for key, n in found.items()},
        "shapes": {"32-63 px RGB": rows},
        "drift": None,
    }


def test_the_stability_index_is_zero_for_the_same_shares_and_grows_with_the_shift():
    assert profile.stability_index({"a": 10, "b": 30}, {"a": 100, "b": 300}) == 0
    shifted = profile.stability_index({"a": 30, "b": 10}, {"a": 10, "b": 30})
    assert shifted == pytest.approx(2 * 0.5 * np.log(3), rel=1e-5)
    assert profile.stability_index({"a": 10, "c": 1}, {"a": 10}) > 0  # a class that appeared


def test_shape_bands_are_the_same_in_python_and_in_spark(spark):
    values = [-3, 0, 1, 2, 3, 7, 8, 63, 64, 96, 127, 128, 4095, 4096, 5000]
    bands = spark.createDataFrame([(v,) for v in values], "v int").select(
        profile.power_of_two_band(F.col("v"), "px").alias("band")
    )
    assert [row["band"] for row in bands.collect()] == [profile.band(v, "px") for v in values]
    assert profile.band(96, "px") == "64-127 px" and profile.band(0, "words") == "0 words"


def test_duplicates_counted_in_the_driver_are_those_spark_counts(spark):
    """The image kind counts duplicates in its own process (``duplicate_rows``), the text kind in
    Spark (``data_profile``): the same rows give the same counts."""
    generator = np.random.default_rng(3)
    content = generator.integers(0, 400, 1000)  # 1,000 rows of 400 contents: many repeats
    labels = generator.integers(0, 3, 1000)
    splits = generator.choice(3, 1000, p=[0.8, 0.1, 0.1])
    names = np.array(["train", "val", "test"])
    rows = [(int(c), f"l{k}", str(names[s])) for c, k, s in zip(content, labels, splits, strict=True)]
    records = spark.createDataFrame(rows, "content long, label string, split string")
    counts = records.groupBy("split", "label").agg(F.count(F.lit(1)).alias("rows")).collect()
    in_spark = profile.data_profile(records, F.col("content"), F.lit("x"), counts, ["l0", "l1", "l2"])
    in_driver = profile.duplicate_rows(content, labels, splits)
    assert in_driver == {key: found["rows"] for key, found in in_spark["duplicates"].items()}
    assert all(in_driver.values())  # every kind of duplicate is there
    assert profile.duplicate_rows(*(np.zeros(0, np.int64),) * 3) == dict.fromkeys(in_driver, 0)


def test_the_default_rules_pass_a_sound_data_set_and_stop_what_no_one_would_train_on():
    rules = ValidateConfig()
    assert profile.findings(_profile({"cat": 50, "dog": 50}, conflicting=0, repeated=8), rules, True) == []
    one_class = profile.findings(_profile({"cat": 50, "dog": 0}), rules, True)
    assert [f.rule for f in one_class] == ["min_classes"]
    assert one_class[0].measured == "1 class with rows (cat)"
    no_train = profile.findings(_profile({"cat": 50, "dog": 5}, {"cat": 40, "dog": 0}), rules, True)
    assert [(f.rule, f.measured) for f in no_train] == [
        ("min_train_rows_per_class", "1 class(es) with fewer train rows: dog")
    ]
    noisy = profile.findings(_profile({"cat": 100, "dog": 100}, cross_label=6, conflicting=3), rules, True)
    assert [(f.rule, f.limit) for f in noisy] == [("max_cross_label_fraction", "at most 1.00%")]
    assert (
        profile.findings(_profile({"cat": 100, "dog": 100}, cross_label=4, conflicting=2), rules, True) == []
    )
    # A generative kind learns no labels: one class is fine.
    assert profile.findings(_profile({"cat": 50}), rules, False) == []


def test_the_optional_rules_apply_only_when_set():
    data = _profile({"cat": 90, "dog": 10}, repeated=20, cross_split=6)
    data["drift"] = {"classes": 0.4, "shapes": 0.0, "rows_before": 100}
    assert profile.findings(data, ValidateConfig(), True) == []
    rules = ValidateConfig(
        max_imbalance=5, max_duplicate_fraction=0.1, max_cross_split_fraction=0.05, max_drift=0.25
    )
    lines = [f.line() for f in profile.findings(data, rules, True)]
    assert lines == [
        "validate.max_imbalance: the largest class has 9.0x the rows of the smallest (at most 5x)",
        "validate.max_duplicate_fraction: 20 rows (20.00%) whose content appears more than once "
        "(at most 10.00%)",
        "validate.max_cross_split_fraction: 6 rows (6.00%) whose content is in two splits (at most 5.00%)",
        "validate.max_drift: the class distribution moved by a stability index of 0.400 (at most 0.25)",
    ]


def test_a_broken_rule_stops_in_one_line_or_warns_and_the_drift_is_against_the_last_profile(tmp_path):
    catalog = Catalog.for_workdir(tmp_path)
    with pytest.raises(ValidationError) as raised:
        profile.checked_profile(catalog, _profile({"cat": 50}), ValidateConfig(), True)
    assert str(raised.value) == (
        "the data fail validate.min_classes: 1 class with rows (cat) (at least 2; a classifier needs a "
        "class folder or label per class); nothing was trained on them"
    )
    assert raised.value.rule == "min_classes"
    warned = profile.checked_profile(catalog, _profile({"cat": 50}), ValidateConfig(mode="warn"), True)
    assert warned["warnings"] == [
        "validate.min_classes: 1 class with rows (cat) (at least 2; a classifier needs a class folder or "
        "label per class)"
    ]
    assert warned["drift"] is None
    profile.record_profile(catalog, warned)
    later = profile.checked_profile(catalog, _profile({"cat": 50, "dog": 50}), ValidateConfig(), True)
    assert later["drift"]["classes"] > 1 and later["drift"]["rows_before"] == 50


def _png(value: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    pixels = np.full((size[1], size[0], 3), value, np.uint8)
    pixels[::3, ::2] = 255 - value  # a pattern, so that two values never decode alike
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for relpath, content in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(content)
    return root


def _two_names_in_two_splits(config) -> tuple[str, str]:
    """Two file names under cats/ that the hash split puts in different splits."""
    names = [f"cats/twin{i}.png" for i in range(50)]
    splits = split_names(names, config.preprocess.split)
    return names[0], names[int(np.argmax(splits != splits[0]))]


def test_the_profile_counts_planted_duplicates_and_the_default_rule_stops_a_label_clash(spark, tmp_path):
    config = image_config(tmp_path / "work", "ingest.image_size=16")
    twin_a, twin_b = _two_names_in_two_splits(config)
    files = {f"cats/c{i}.png": _png(i) for i in range(20)}
    files.update({f"dogs/d{i}.png": _png(100 + i, (70, 20), "L") for i in range(20)})
    files.update({twin_a: _png(200), twin_b: _png(200)})  # the same image twice, in two splits
    files["dogs/clash.png"] = files["cats/c0.png"]  # one image under two labels
    source = _tree(tmp_path / "images", files)
    ingest.run(config, lambda: spark, str(source))

    with pytest.raises(ValidationError) as raised:
        preprocess.run(config, lambda: spark)
    assert raised.value.rule == "max_cross_label_fraction"
    assert raised.value.measured.startswith("1 rows (2.33%) have another label")
    assert not Catalog.for_workdir(config.workdir).profile.exists()  # nothing recorded

    warned = config.model_copy(update={"validation": ValidateConfig(mode="warn")})
    report = preprocess.run(warned, lambda: spark)
    found = report["profile"]
    assert found["rows"] == 43
    assert found["classes"] == {"cats": 22, "dogs": 21}
    clash_splits = split_names(["cats/c0.png", "dogs/clash.png"], config.preprocess.split)
    assert {key: value["rows"] for key, value in found["duplicates"].items()} == {
        "repeated": 4,  # c0 with clash, twin_a with twin_b
        "cross_label": 2,
        "conflicting": 1,
        "cross_split": 2 + 2 * (clash_splits[0] != clash_splits[1]),
    }
    assert found["shapes"] == {"32-63 px RGB": 23, "64-127 px L": 20}  # clash.png is a copy of c0
    assert [line.split(":")[0] for line in found["warnings"]] == ["validate.max_cross_label_fraction"]
    written = json.loads(Catalog.for_workdir(config.workdir).profile.read_text())
    assert written["classes"] == found["classes"] and written["drift"] is None


def test_one_class_stops_a_classifier_before_training_and_not_a_gan(spark, tmp_path):
    source = _tree(tmp_path / "images", {f"only/{i}.png": _png(i) for i in range(12)})
    config = image_config(tmp_path / "work", "ingest.image_size=16")
    ingest.run(config, lambda: spark, str(source))
    with pytest.raises(ValidationError) as raised:
        preprocess.run(config, lambda: spark)
    assert raised.value.rule == "min_classes"
    gan = load_config(
        IMAGE_CONFIG.with_name("image_gan.yaml"), [f"workdir={tmp_path / 'work'}", "ingest.image_size=16"]
    )
    assert preprocess.run(gan, lambda: spark)["profile"]["warnings"] == []


@pytest.mark.slow
def test_dlfusion_run_on_one_class_folder_ends_at_validation_in_one_line(tmp_path):
    _tree(tmp_path / "images", {f"only/{i}.png": _png(i) for i in range(12)})
    done = dlfusion(
        "run", str(IMAGE_CONFIG), f"workdir={tmp_path / 'work'}", f"data.source={tmp_path / 'images'}"
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        "dlfusion: error: the data fail validate.min_classes: 1 class with rows (only) (at least 2; a "
        "classifier needs a class folder or label per class); nothing was trained on them"
    ]
    assert "Traceback" not in done.stderr + done.stdout
    assert "train" not in [line.split(":")[0] for line in done.stdout.splitlines()]
