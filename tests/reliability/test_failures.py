"""Failures end one way: one 'dlfusion: error:' line, the documented exit code, the summary JSON
(status, failed stage, error) and the full trace in the run's log file, never a trace alone."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reliability.conftest import Dlfusion


def _run(*args: str) -> Dlfusion:
    command = Dlfusion(*args)
    command.finish(timeout=300)
    return command


def test_an_unwritable_workdir_fails_in_one_line_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    summary = tmp_path / "summary.json"
    command = _run("ingest", "conf/image_cnn.yaml", f"workdir={blocker}/work", "--summary-json", str(summary))
    assert command.process.returncode == 1
    assert command.error_lines == [
        f"dlfusion: error: {blocker}/work: the workdir is not writable (Not a directory)"
    ]
    assert not [line for line in command.lines if "Spark" in line or "Traceback" in line]
    result = json.loads(summary.read_text())
    assert (result["status"], result["failed_stage"]) == ("failed", "ingest")
    assert "not writable" in result["error"]


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_with_its_trace_in_the_log_file(digits_workdir, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(digits_workdir, workdir)
    for part in (workdir / "ingest" / "records.parquet").glob("split=*/*.parquet"):
        # Changed behind the pipeline's back: the same rows, their paths numbers.
        table = pq.read_table(part)
        paths = pa.array(range(table.num_rows), pa.int64())
        pq.write_table(table.set_column(table.schema.get_field_index("relpath"), "relpath", paths), part)
    summary = tmp_path / "summary.json"

    command = _run(
        "preprocess", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]",
        "--summary-json", str(summary),
    )  # fmt: skip

    assert command.process.returncode == 1
    assert len(command.error_lines) == 1 and " (full trace: " in command.error_lines[0]
    assert not [line for line in command.lines if "Traceback" in line or line.startswith("\tat ")]
    result = json.loads(summary.read_text())
    assert (result["status"], result["failed_stage"]) == ("failed", "preprocess")
    log_file = result["log_file"]
    assert log_file in command.error_lines[0]
    assert "Traceback" in open(log_file).read()

    debug = _run(
        "preprocess", "conf/image_cnn.yaml", f"workdir={workdir}", "spark.master=local[2]", "--debug"
    )
    assert debug.process.returncode == 1
    assert [line for line in debug.lines if "Traceback" in line]  # --debug: the trace on the console
