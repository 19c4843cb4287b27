"""The demo as a user runs it: `dlfusion run` in a fresh process, real Spark, Horovod and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

from mlflow import MlflowClient

from tests.conftest import ROOT


def test_demo_pipeline_reaches_the_accuracy_target(tmp_path):
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            "conf/image_cnn.yaml",
            f"workdir={tmp_path / 'work'}",
            "--summary-json",
            str(summary_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "succeeded"
    counts = summary["ingest"]
    assert counts["files_seen"] == counts["rows_written"] + counts["rows_quarantined"] == 1797
    assert sum(summary["splits"].values()) == 1797
    assert summary["test_metrics"]["test_accuracy"] >= 0.95
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout

    run = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == summary["test_metrics"]["test_accuracy"]


def test_text_demo_beats_the_majority_baseline_by_a_wide_margin(tmp_path):
    """20,000 generated reviews (the acceptance data set) through `dlfusion run conf/text_lstm.yaml`."""
    summary_path = tmp_path / "summary.json"
    workdir = tmp_path / "work"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            "conf/text_lstm.yaml",
            f"workdir={workdir}",
            "--summary-json",
            str(summary_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["ingest"]["records_seen"] == 20_000 == summary["ingest"]["rows_written"]
    counts = json.loads((workdir / "preprocess" / "report.json").read_text())["splits"]["test"][
        "label_counts"
    ]
    baseline = max(counts) / sum(counts)
    assert summary["test_metrics"]["test_accuracy"] >= baseline + 0.15, (summary["test_metrics"], baseline)
    assert "records seen 20000 = written 20000 + quarantined 0" in result.stdout
