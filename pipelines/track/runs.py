"""MLflow tracking: one run per pipeline run, created on the driver; ranks only log through it.

Logging must never kill training: metric logging retries briefly, then warns and carries on.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, stop_after_attempt, wait_exponential

from pipelines.core.catalog import Catalog
from pipelines.core.config import PipelineConfig, flatten
from pipelines.core.errors import DataError
from pipelines.io.filesystems import read_bytes

log = logging.getLogger(__name__)


def redact(uri: str) -> str:
    """``uri`` without a password: http://user:secret@host -> http://user:***@host."""
    import re

    return re.sub(r"(://[^:/@]+):[^/]*@", r"\1:***@", uri)


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, before any Spark work, when an HTTP tracking server does not answer.

    Raises:
        TrackingError: one line naming the URI (without credentials).
    """
    from pipelines.core.errors import TrackingError
    from pipelines.track.mlflow_server import is_up

    if tracking_uri.startswith(("http://", "https://")) and not is_up(tracking_uri, timeout_s):
        raise TrackingError(
            f"MLflow tracking server {redact(tracking_uri)} does not answer (set mlflow.tracking_uri, "
            "or start one: make mlflow)"
        )


def mlflow_client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# The experiment holds model training runs (the value MLflow's UI writes when a user picks "Model
# training"). MLflow 3.17.2's UI itself takes the view from the page's ``workflowType`` (``ui_page``),
# not from this tag; MLflow versions without that switch read the tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(config: PipelineConfig) -> str:
    import mlflow

    from pipelines.track import database

    database.prepare(config.tracking_uri)  # a run's first MLflow call: a new database is a copy
    mlflow.set_tracking_uri(config.tracking_uri)
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is not None:
        for key, value in EXPERIMENT_KIND.items():
            if key not in experiment.tags:  # made by an earlier version: tag it, never override a choice
                mlflow_client(config.tracking_uri).set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    artifacts = None
    if config.mlflow.tracking_uri is None:  # embedded store: keep artifacts beside the database
        artifacts = (Path(config.workdir).resolve() / "mlartifacts").as_uri()
    return mlflow.create_experiment(
        config.mlflow.experiment, artifact_location=artifacts, tags=EXPERIMENT_KIND
    )


def ui_page(tracking_uri: str, run_id: str) -> str | None:
    """The run's page in MLflow's UI, relative to the UI's address. MLflow 3.17's UI shows an
    experiment as GenAI traces unless the page asks for its "Model training" view (``workflowType``;
    without it, the choice last made in that browser, GenAI at first)."""
    try:
        experiment_id = mlflow_client(tracking_uri).get_run(run_id).info.experiment_id
    except Exception as err:  # a link is a convenience: a server gone since must not fail the run
        log.warning("MLflow run %s not found for its UI link: %s", run_id, err)
        return None
    return f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def git_commit() -> str:
    """The commit of the code that runs, or "unknown" outside a git checkout."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_digest(preprocess_report: dict) -> str:
    """One digest of the preprocessed data: its splits' content digests, in split order."""
    import hashlib

    joined = ",".join(f"{name}={split['digest']}" for name, split in preprocess_report["splits"].items())
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def run_name(config: PipelineConfig) -> str:
    """Tells runs apart in a list: kind, data and start time, e.g. image_cnn-flowers-20261130-0812."""
    import time

    data = Path(str(config.data.source).rstrip("/")).name if config.data.source else "demo"
    return f"{config.pipeline}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def start_run(config: PipelineConfig, preprocess_report: dict) -> str:
    """Create the MLflow run of this pipeline run (driver only): a telling name, the resolved config
    as params, and tags to find it by (kind, git commit, data digest, ranks, Spark master)."""
    import mlflow

    experiment_id = _experiment_id(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name(config)) as run:
        params = flatten(config.model_dump(mode="json"))
        mlflow.log_params({key: redact(str(value))[:6000] for key, value in params.items()})
        mlflow.set_tags(
            {
                "dlfusion.pipeline": config.pipeline,
                "dlfusion.git_commit": git_commit(),
                "dlfusion.data_digest": data_digest(preprocess_report),
                "dlfusion.horovod_size": str(config.train.num_proc),
                "dlfusion.spark_master": config.spark.master or "local[*] or spark-submit's",
            }
        )
        return run.info.run_id


def latest_run_id(config: PipelineConfig) -> str | None:
    """The MLflow run of this kind's latest training in the workdir; None when there is none."""
    from pipelines.io import atomic, filesystems

    latest = Catalog.for_workdir(config.workdir).latest_run(config.pipeline)
    return atomic.read_json(latest)["run_id"] if filesystems.is_file(latest) else None


def trained_run_id(config: PipelineConfig) -> str:
    """The MLflow run of this kind's latest training in the workdir.

    Raises:
        DataError: when nothing was trained here yet.
    """
    run_id = latest_run_id(config)
    if run_id is None:
        latest = Catalog.for_workdir(config.workdir).latest_run(config.pipeline)
        raise DataError(str(latest), "no trained model: run the train stage first")
    return run_id


def record_latest_run(config: PipelineConfig, run_id: str) -> None:
    """Make ``run_id`` this kind's latest training in the workdir (what evaluate and resume find)."""
    from pipelines.io import atomic

    atomic.write_json_atomically(
        {"run_id": run_id}, Catalog.for_workdir(config.workdir).latest_run(config.pipeline)
    )


def resume_run(config: PipelineConfig) -> str | None:
    """The run id of the latest training in this workdir, to continue it; None when there is none."""
    run_id = latest_run_id(config)
    if run_id is None:
        log.info("train.resume=true but no earlier training in %s: starting a new run", config.workdir)
        return None
    _experiment_id(config)
    return run_id


def set_tags(tracking_uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = mlflow_client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def mark_running(tracking_uri: str, run_id: str) -> None:
    """Show the run as RUNNING while the ranks train (logging through ``mlflow.start_run`` ends it)."""
    mlflow_client(tracking_uri).update_run(run_id, status="RUNNING")


def mark_failed(tracking_uri: str, run_id: str, status: str = "FAILED") -> None:
    """End the run as FAILED (or KILLED, when a signal stopped it)."""
    try:
        mlflow_client(tracking_uri).set_terminated(run_id, status)
    except Exception as err:  # the original failure matters more than this one
        log.warning("could not mark MLflow run %s failed: %s", run_id, err)


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int | None = None) -> bool:
    """Log ``metrics`` with a few retries; on failure warn and return False instead of raising."""
    return send_metrics(tracking_uri, run_id, [(step or 0, metrics)])


def send_metrics(
    tracking_uri: str, run_id: str, epochs: list[tuple[int, dict[str, float]]], attempts: int = 3
) -> bool:
    """Log (step, metrics) pairs in one batch, in up to ``attempts`` tries; on failure warn and
    return False."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), stamp, step) for step, metrics in epochs for key, value in metrics.items()
    ]

    @retry(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
    def send():
        mlflow_client(tracking_uri).log_batch(run_id, metrics=batch)

    try:
        send()
        return True
    except Exception as err:
        log.warning("MLflow logging failed, training continues: %s", str(err).splitlines()[0])
        return False


def flush_pending_metrics(tracking_uri: str, run_id: str, pending: Path) -> None:
    """Send the epoch metrics a tracking outage kept on disk (``relay.MetricsRelay``), then drop them.

    Raises:
        TrackingError: when the server still does not take them.
    """
    from pipelines.core.errors import TrackingError
    from pipelines.io.atomic import read_json

    if not pending.is_file():
        return
    epochs = [(int(step), metrics) for step, metrics in read_json(pending)]
    if not send_metrics(tracking_uri, run_id, epochs):
        raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} did not take the kept metrics")
    pending.unlink()
    log.info("sent %d epoch(s) of metrics kept during a tracking outage", len(epochs))


def log_data(
    config: PipelineConfig, run_id: str, ingest_report: dict, preprocess_report: dict, profile: dict | None
) -> None:
    """Record ingest counts and split sizes (params), each split as an MLflow dataset input, and the
    data profile beside them (``data/profile.json``, ``data/class_balance.png``; its validation
    warnings as the tag ``dlfusion.validation.warnings``)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with mlflow.start_run(run_id=run_id):
        # Counts are facts about the data, not curves: params, so that the metrics page shows
        # only what training and evaluation measured.
        counts = {f"data.ingest.{k}": v for k, v in ingest_report.items() if not isinstance(v, dict)}
        counts.update(
            {f"data.ingest.increment.{k}": v for k, v in ingest_report.get("increment", {}).items()}
        )
        for name, split in preprocess_report["splits"].items():
            counts.update(
                {f"data.{name}.rows": split["rows"], f"data.{name}.row_groups": split["row_groups"]}
            )
        mlflow.log_params(counts)
        snapshot = preprocess_report.get("snapshot")
        # The snapshot names every file the splits came from: listed from the run after later
        # ingests removed some (``data/snapshot.parquet``), and named on each dataset input.
        tags = {"dlfusion.snapshot": f"i{snapshot['number']:05d}"} if snapshot else None
        if snapshot:
            _log_file(snapshot["path"], "data/snapshot.parquet")
        for name, split in preprocess_report["splits"].items():
            with warnings.catch_warnings():  # MLflow registers its local source twice and says so
                warnings.filterwarnings("ignore", message="The specified dataset source")
                source = resolve_dataset_source(Path(split["path"]).resolve().as_uri())
            dataset = MetaDataset(
                source,
                name=f"{config.pipeline}-{name}",
                digest=split["digest"],
            )
            mlflow.log_input(dataset, context=name, tags=tags)
        if profile is not None:
            _log_profile(profile)


def _log_file(location: str, artifact: str) -> None:
    """Log the file at ``location`` (local or a URI) as the run's artifact ``artifact``."""
    import tempfile

    import mlflow

    folder, name = artifact.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(read_bytes(location))
        mlflow.log_artifact(str(Path(tmp) / name), folder)


def _log_profile(profile: dict) -> None:
    import tempfile

    import mlflow

    from pipelines.track import plots

    mlflow.log_dict(profile, "data/profile.json")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(plots.class_balance(profile, Path(tmp) / "class_balance.png")), "data")
    if profile.get("warnings"):
        mlflow.set_tag("dlfusion.validation.warnings", "; ".join(profile["warnings"]))


def data_profile(tracking_uri: str, run_id: str) -> dict | None:
    """The data profile a training logged (``data/profile.json``), or None (a run without one)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/data/profile.json")
    except (MlflowException, OSError):
        return None


def log_score_drift(tracking_uri: str, run_id: str, drift: dict[str, float]) -> None:
    """Log a scoring's drift to the training run of its model: one point per scoring, by time."""
    names = {"classes": "score_class_drift", "shapes": "score_shape_drift"}
    mlflow_client(tracking_uri).log_batch(
        run_id, metrics=[_metric(names[name], value) for name, value in drift.items()]
    )


def _metric(key: str, value: float):
    import time

    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), 0)


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, enabled: bool = True):
    """Log CPU, memory, disk and network use to the run while the block runs (MLflow's own monitor)."""
    monitor = None
    if enabled:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                run_id, sampling_interval=3, resume_logging=True, tracking_uri=tracking_uri
            )
            monitor.start()
        except Exception as err:  # the metrics are a convenience, never a reason to fail training
            log.warning("system metrics are off: %s", str(err).splitlines()[0])
            monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def log_training_outcome(config: PipelineConfig, run_id: str, early_stopping: dict | None) -> None:
    """Learning curves from the run's epoch metrics (a PNG), and how early stopping ended, as tags."""
    import tempfile

    from pipelines.track.plots import learning_curves

    client = mlflow_client(config.tracking_uri)
    run = client.get_run(run_id)
    keys = [k for k in run.data.metrics if not k.startswith(("system/", "test_"))]
    history = {
        k: [m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = learning_curves(history, Path(tmp) / "learning_curves.png", run.info.run_name or "")
        client.log_artifact(run_id, str(path), "plots")
    if early_stopping:
        client.log_dict(run_id, early_stopping, "training/early_stopping.json")
        for key, value in early_stopping.items():
            client.set_tag(run_id, f"dlfusion.early_stopping.{key}", "" if value is None else str(value))


def log_artifact_or_warn(tracking_uri: str, run_id: str, path: Path, folder: str) -> bool:
    """Attach a file to the run (from a rank, mid-training): an unreachable server costs a warning
    and False, never the training."""
    try:
        mlflow_client(tracking_uri).log_artifact(run_id, str(path), folder)
        return True
    except Exception as err:
        log.warning("could not log %s to MLflow (it stays at %s): %s", folder, path, str(err).splitlines()[0])
        return False


def download_run_artifact(tracking_uri: str, run_id: str, artifact_path: str) -> Path:
    """A file logged to a run, downloaded to a temporary folder."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path))


def log_evaluation(tracking_uri: str, run_id: str, metrics: dict[str, float], artifacts: Path) -> None:
    """Log a test evaluation to the training's run: its metrics, and the files in ``artifacts``
    under ``evaluation/``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(artifacts), "evaluation")
