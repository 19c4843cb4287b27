"""One run per workdir: a second run refuses in one line naming the holder; a killed holder's lock
is taken over; runs in different workdirs go at once, each in its own Spark application."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from pipelines.core.catalog import Catalog
from pipelines.runtime.locking import workdir_lock
from tests.reliability.conftest import ROOT, Dlfusion


def test_a_second_run_on_a_busy_workdir_refuses_in_one_line_naming_the_holder(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    summary = tmp_path / "summary.json"
    with workdir_lock(workdir, "train"):
        second = Dlfusion(
            "ingest", "conf/image_cnn.yaml", f"workdir={workdir}", "--summary-json", str(summary)
        )
        code = second.finish(timeout=120)

    assert code == 75  # EX_TEMPFAIL: a scheduler may retry later
    assert len(second.error_lines) == 1
    line = second.error_lines[0]
    assert line.startswith(f"dlfusion: error: {workdir.resolve()}: in use by dlfusion train (process ")
    assert " started " in line and not [text for text in second.lines if "Spark" in text]
    assert json.loads(summary.read_text())["status"] == "failed"


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    hold = (
        "import time\nfrom pipelines.runtime.locking import workdir_lock\n"
        f"with workdir_lock({str(workdir)!r}, 'train'):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)

    started = time.monotonic()
    with workdir_lock(workdir, "ingest") as path:  # no waiting, no manual clean-up
        assert json.loads(path.read_text())["stage"] == "ingest"
    assert time.monotonic() - started < 1
    assert Catalog.for_workdir(workdir).lock.is_file()


def test_runs_in_different_workdirs_go_at_once(tmp_path):
    from PIL import Image

    source = tmp_path / "raw"
    for label in ("a", "b"):
        (source / label).mkdir(parents=True)
        for index in range(20):
            Image.new("RGB", (8, 8), (index * 10, 0, 0)).save(source / label / f"{index}.png")
    runs = [
        Dlfusion("ingest", "conf/image_cnn.yaml", f"workdir={tmp_path / name}", f"data.source={source}")
        for name in ("one", "two")
    ]
    assert [run.finish(timeout=300) for run in runs] == [0, 0], [run.lines[-5:] for run in runs]
    for run in runs:
        assert "  files seen 40 = written 40 + quarantined 0" in run.lines
