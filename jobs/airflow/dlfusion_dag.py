"""Airflow DAG ``dlfusion``: ingest -> preprocess -> train -> evaluate -> promote, one task per stage.

Each task runs ``dlfusion STAGE CONFIG workdir=... [data.source=...] [KEY=VALUE ...] --summary-json
FILE`` in a shell (a ``BashOperator``) and returns the stage's summary JSON, so it lands in XCom
(``return_value``). Promote's own gate decides whether the new model becomes the champion.

Exit codes (docs/operations.md, "Failure behaviour"): 2, a configuration error, fails the task at once without
its retries (a retry would fail the same way); everything else that is not 0 is retried with
exponential back-off: 75 (another run holds the workdir), 1 (failed: a lost rank, an unreachable
tracking server, ...) and 128+signal (killed).

Install: copy or symlink this file into Airflow's dags folder. The repository (for the default
config and workdir) is ``DLFUSION_HOME``, else found from this file's real path (a symlink is
followed). ``DLFUSION_BIN`` names the dlfusion command (default: ``dlfusion`` on PATH).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.models.param import Param
from airflow.operators.bash import BashOperator

STAGES = ("ingest", "preprocess", "train", "evaluate", "promote")
EXIT_CONFIG, EXIT_BUSY = 2, 75  # pipelines/cli.py


def _home() -> Path:
    """The dlfusion repository: DLFUSION_HOME, else two folders above this file's real path."""
    if os.environ.get("DLFUSION_HOME"):
        return Path(os.environ["DLFUSION_HOME"]).expanduser().resolve()
    return Path(__file__).resolve().parents[2]


HOME = _home()


def summary_file(params: dict, run_id: str, stage: str) -> str:
    """Where a stage's summary JSON goes: WORKDIR/summaries/RUN_ID/STAGE.json (one per DAG run);
    under the temporary folder when the workdir is not a local path (dlfusion refuses those)."""
    run = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)
    location = urlsplit(params["workdir"])
    if location.scheme == "file":
        base = Path(location.path)
    elif location.scheme and "://" in params["workdir"]:
        base = Path(tempfile.gettempdir()) / "dlfusion"
    else:
        base = Path(params["workdir"])
    return str(base / "summaries" / run / f"{stage}.json")


def dlfusion_command(params: dict, stage: str, run_id: str) -> str:
    """The shell command of one stage, every argument quoted.

    ``params["dlfusion"]`` is a command prefix (shell words), so a spark-submit or container set-up
    fits: the stage is appended to it, or put in place of ``{stage}`` where it has one
    (``spark-submit --master yarn /opt/dlfusion/jobs/{stage}.py``).
    """
    prefix = params["dlfusion"].strip()
    head = prefix.replace("{stage}", stage) if "{stage}" in prefix else f"{prefix} {stage}"
    args = [params["config"], f"workdir={params['workdir']}"]
    if params.get("data_source"):
        args.append(f"data.source={params['data_source']}")
    if params.get("registered_model"):
        args.append(f"mlflow.registered_model={params['registered_model']}")
    if params.get("init_from"):
        args.append(f"train.init_from={params['init_from']}")
    args += params.get("overrides") or []
    args += ["--summary-json", summary_file(params, run_id, stage)]
    # exec: the stage's process replaces the shell, so its exit code and signals are its own.
    return f"exec {head} " + " ".join(shlex.quote(str(arg)) for arg in args)


class DlfusionStage(BashOperator):
    """One dlfusion stage; returns (pushes to XCom) its summary JSON.

    Exit code 2 fails the task without retries: the operator asks BashOperator to turn it into a
    skip (``skip_on_exit_code``), the one exit code BashOperator reports apart, and raises
    ``AirflowFailException`` instead. Any other non-zero exit code is a plain failure: retried.
    """

    def __init__(self, *, stage: str, **kwargs) -> None:
        self.stage = stage
        super().__init__(
            bash_command=f"{{{{ dlfusion_command(params, {stage!r}, run_id) }}}}",
            skip_on_exit_code=[EXIT_CONFIG],
            **kwargs,
        )

    def execute(self, context) -> dict:
        path = Path(summary_file(context["params"], context["run_id"], self.stage))
        if not path.is_absolute() and self.cwd:
            path = Path(self.cwd) / path
        path.unlink(missing_ok=True)  # an earlier try's summary must not pass for this one's
        try:
            super().execute(context)
        except AirflowSkipException:
            raise AirflowFailException(
                f"dlfusion {self.stage}: {_error(path)} (exit code {EXIT_CONFIG}: configuration error, "
                "not retried)"
            ) from None
        except AirflowException:
            code = self.subprocess_hook.sub_process.returncode if self.subprocess_hook.sub_process else None
            if code is None:  # not the command's failure (e.g. a missing cwd)
                raise
            what = "workdir busy, retried later" if code == EXIT_BUSY else "retried if tries remain"
            raise AirflowException(
                f"dlfusion {self.stage}: {_error(path)} (exit code {code}: {what})"
            ) from None
        return json.loads(path.read_text())


def _error(path: Path) -> str:
    """The summary's one-line error, or why there is none."""
    try:
        return json.loads(path.read_text()).get("error", "no error in the summary")
    except (OSError, ValueError) as err:
        return f"no summary ({err})"


with DAG(
    dag_id="dlfusion",
    description="dlfusion: ingest -> preprocess -> train -> evaluate -> promote",
    # Run on demand (or from the job that lands new data): the stages work on one workdir, not on a
    # date's partition, so a schedule would retrain on unchanged data and catch-up would repeat it.
    schedule=os.environ.get("DLFUSION_SCHEDULE") or None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # one workdir: a second run would only interleave its stages with the first
    default_args={
        "retries": int(os.environ.get("DLFUSION_RETRIES", "3")),
        "retry_delay": timedelta(seconds=float(os.environ.get("DLFUSION_RETRY_DELAY_S", "300"))),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=float(os.environ.get("DLFUSION_MAX_RETRY_DELAY_S", "3600"))),
    },
    params={
        "config": Param(str(HOME / "conf" / "image_cnn.yaml"), type="string", minLength=1),
        "workdir": Param(str(HOME / "work" / "airflow"), type="string", minLength=1),
        "data_source": Param("", type="string", description="empty: dlfusion's digits demo data"),
        "registered_model": Param(
            "image_cnn", type="string", description="mlflow.registered_model (promote needs one)"
        ),
        "init_from": Param(
            "champion",
            type="string",
            description="train.init_from: champion (fine-tune it on the grown data; without one, "
            "training starts from scratch and says so), a run id, or none",
        ),
        "overrides": Param([], type="array", description='more KEY=VALUE, e.g. ["train.epochs=2"]'),
        "dlfusion": Param(
            os.environ.get("DLFUSION_BIN", "dlfusion"),
            type="string",
            minLength=1,
            description="the dlfusion command; {stage} is replaced by the stage",
        ),
    },
    user_defined_macros={"dlfusion_command": dlfusion_command},
    tags=["dlfusion"],
    doc_md=__doc__,
) as dag:
    previous = None
    for name in STAGES:
        task = DlfusionStage(task_id=name, stage=name, cwd=str(HOME) if HOME.is_dir() else None)
        if previous is not None:
            previous >> task
        previous = task
