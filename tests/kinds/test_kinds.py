"""Every registered kind is a complete plug-in, and shared code never names a kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.core.errors import ConfigError
from pipelines.core.stages import KIND_STAGES
from pipelines.kinds import GROUP, contract, kind_named, registered
from pipelines.pipeline.config_files import load_config
from pipelines.train.task import TrainingTask

ROOT = Path(__file__).resolve().parents[2]

# What each stage needs from a kind, and the shape of that part.
STAGE_PARTS = {
    "ingest": ("ingest", "demo"),
    "preprocess": ("preprocess",),
    "train": ("task", "served_model"),
    "evaluate": ("evaluate",),
}


@pytest.mark.parametrize("name", registered())
def test_kind_is_an_installed_entry_point_whose_parts_keep_the_typed_contract(name):
    from importlib.metadata import entry_points

    assert name in {point.name for point in entry_points(group=GROUP)}
    assert contract.check(kind_named(name)) == []


def test_a_part_with_the_wrong_parameters_breaks_the_contract():
    from dataclasses import replace

    kind = replace(
        kind_named("image_cnn"),
        evaluate="pipelines.kinds.image_cnn.demo:digits_demo",
        demo="pipelines.demo:nope",
    )
    problems = contract.check(kind)
    assert len(problems) == 2
    assert problems[0].startswith("image_cnn.demo: pipelines.demo:nope does not import")
    assert problems[1].startswith(
        "image_cnn.evaluate: pipelines.kinds.image_cnn.demo:digits_demo must take (config"
    )
    # A plug-in written when ingest was given a session, not start_spark: one line, before any work.
    old = replace(kind_named("image_cnn"), ingest=f"{__name__}:_ingest_given_a_session")
    with pytest.raises(ConfigError) as raised:
        old.part("ingest")
    assert "start_spark" in str(raised.value) and "found (config, spark, source)" in str(raised.value)
    assert "\n" not in str(raised.value)


def _ingest_given_a_session(config, spark, source):
    raise AssertionError("never called")


@pytest.mark.parametrize("name", registered())
def test_kind_supports_every_stage_it_declares(name):
    kind = kind_named(name)
    assert kind.name == name
    assert kind.stages and set(kind.stages) <= set(KIND_STAGES)
    for stage in kind.stages:
        for part in STAGE_PARTS[stage]:
            assert callable(kind.part(part)), f"{name}: {stage} needs {part}"
    if "train" in kind.stages:
        assert issubclass(kind.part("task"), TrainingTask)
    assert kind.primary_metric.startswith("test_")
    if kind.score_input is not None:
        assert callable(kind.part("score_input"))


def test_scoring_a_kind_whose_model_takes_no_input_is_a_one_line_config_error(tmp_path):
    from pipelines.score import scoring

    takes_none = [name for name in registered() if kind_named(name).score_input is None]
    assert takes_none  # the GAN's generator
    config = load_config(ROOT / "conf" / f"{takes_none[0]}.yaml", [f"workdir={tmp_path}"])
    with pytest.raises(ConfigError, match="models take no input data to score"):
        scoring.run(config, spark=None)


@pytest.mark.parametrize("name", registered())
def test_kind_has_a_shipped_config_that_validates_to_its_class(name):
    config = load_config(ROOT / "conf" / f"{name}.yaml")
    assert config.pipeline == name
    assert type(config) is kind_named(name).config


def test_an_unknown_kind_is_a_one_line_config_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("pipeline: image_vae\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith("pipeline: unknown pipeline 'image_vae' (one of: ")
    assert "\n" not in str(caught.value)


def test_shared_code_never_compares_a_kind_name():
    """A kind's name appears only in the registry and in its own folder (and nowhere in a shared stage)."""
    names = re.compile("|".join(re.escape(f'"{name}"') for name in registered()))
    kinds = ROOT / "pipelines" / "kinds"
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "pipelines").rglob("*.py")
        if path != kinds / "__init__.py"
        and not (path.parent.parent == kinds)  # a kind's own folder
        and names.search(path.read_text())
    ]
    assert offenders == []
