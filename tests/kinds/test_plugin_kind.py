"""A fourth kind that lives outside ``pipelines/`` (tests/kinds/plugin_kind), installed as a package of its
own: the shared stages run it end to end, found through its entry point alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import ROOT, dlfusion

pytestmark = pytest.mark.slow  # a whole run with promotion, then scoring

KIND = "image_mlp"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> str:
    """The kind's package installed with pip into a folder of its own (not this environment):
    what PYTHONPATH must hold for the command, its Spark workers and its ranks to find it."""
    import shutil

    site, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("kind") / "plugin_kind"
    # pip builds in place: in a copy, not in the repository
    shutil.copytree(ROOT / "tests" / "kinds" / "plugin_kind", source)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True)
    assert (site / "image_mlp").is_dir() and list(site.glob("dlfusion_image_mlp-*.dist-info"))
    return str(site)


def test_an_installed_out_of_tree_kind_runs_every_stage_and_scores(installed, tmp_path):
    assert not [p for p in (ROOT / "pipelines").rglob("*.py") if KIND in p.read_text()]  # unknown there
    config = tmp_path / f"{KIND}.yaml"
    config.write_text(f"pipeline: {KIND}\nmlflow:\n  experiment: {KIND}\nmodel:\n  hidden_units: 64\n")
    workdir, summary = tmp_path / "work", tmp_path / "summary.json"
    run = dlfusion(
        "run",
        str(config),
        f"workdir={workdir}",
        "train.epochs=4",
        "mlflow.registered_model=digits-mlp",
        "promote.enabled=true",
        "--summary-json",
        str(summary),
        PYTHONPATH=installed,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["promotion"]["decision"] == "promoted"
    assert ", master local" not in Path(result["log_file"]).read_text()  # both evaluations on the ranks
    assert result["test_metrics"]["test_accuracy"] > 0.8, result["test_metrics"]

    new = workdir / "raw" / "digits" / "3"  # the demo digits of one class, as new data
    scored = tmp_path / "scores"
    score = dlfusion(
        "score",
        str(config),
        f"workdir={workdir}",
        f"data.source={new}",
        f"output={scored}",
        PYTHONPATH=installed,
    )
    assert score.returncode == 0, score.stderr[-3000:]
    report = json.loads((scored / "report.json").read_text())
    assert report["inputs"] == report["scored"] == len(list(new.iterdir()))

    # The registered model serves where the kind is not installed (this process): it carries its code.
    import mlflow
    import numpy as np

    assert "image_mlp" not in sys.modules
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/digits-mlp@champion")
    assert np.asarray(model.predict(np.zeros((2, 32, 32, 3), np.uint8))).shape == (2, 10)
