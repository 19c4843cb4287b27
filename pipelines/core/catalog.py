"""Named data sets of a run and where they live: every location derives from ``workdir`` here.

``workdir`` is a local path (or a ``file:`` URI), kept as an absolute ``Path``, or a URI of another
file system (``s3://bucket/work``, ``hdfs://namenode/work``), kept as a ``locations.Uri``: every
location below is then of the same kind, and is read and written through ``pipelines.io``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.core import locations
from pipelines.core.locations import Location

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Catalog:
    """Locations of every data set and artifact a pipeline run reads or writes."""

    workdir: Location

    @classmethod
    def for_workdir(cls, workdir: str | Location) -> Catalog:
        return cls(locations.location(workdir))

    @property
    def lock(self) -> Location:
        """The ``flock`` that lets one ``dlfusion`` command at a time work here (``runtime.locking``)."""
        return self.workdir / ".dlfusion.lock"

    @property
    def logs(self) -> Location:
        """One log file per ``dlfusion`` command, with its full traces (``runtime.logs``)."""
        return self.workdir / "logs"

    @property
    def mlflow_database(self) -> Location:
        """The SQLite tracking store used when ``mlflow.tracking_uri`` is unset."""
        return self.workdir / "mlflow.db"

    def demo_data(self, name: str) -> Location:
        """Where a kind writes its demo raw data ``name`` (used when ``data.source`` is unset)."""
        return self.workdir / "raw" / name

    @property
    def listing(self) -> Location:
        """The files ingest saw (relpath, size), one Parquet file per Spark task."""
        return self.workdir / "ingest" / "listing"

    @property
    def ingested(self) -> Location:
        """The usable records. Image ingest writes them already split, one ``split=NAME`` folder per
        split (``ingested_split``: Spark reads the folder name as a ``split`` column)."""
        return self.workdir / "ingest" / "records.parquet"

    def ingested_split(self, name: str) -> Location:
        """The ingested records of split ``name``, where a kind's ingest splits them itself."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self.ingested / f"split={name}"

    @property
    def quarantine(self) -> Location:
        return self.workdir / "ingest" / "quarantine.parquet"

    @property
    def snapshots(self) -> Location:
        """One snapshot per ingest (``ingest.increments``): every file ingested and the data file
        that holds its row; the newest is what the next ingest compares the source with."""
        return self.workdir / "ingest" / "snapshots"

    def snapshot(self, number: int) -> Location:
        return self.snapshots / f"i{number:05d}.parquet"

    @property
    def ingest_report(self) -> Location:
        return self.workdir / "ingest" / "report.json"

    def split(self, name: str) -> Location:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self.workdir / "preprocess" / f"{name}.parquet"

    @property
    def published_snapshot(self) -> Location:
        """The ingest snapshot whose files the splits hold (``ingest.increments``), logged by training."""
        return self.workdir / "preprocess" / "snapshot.parquet"

    @property
    def transform(self) -> Location:
        return self.workdir / "preprocess" / "transform.json"

    @property
    def preprocess_report(self) -> Location:
        return self.workdir / "preprocess" / "report.json"

    @property
    def profile(self) -> Location:
        """The data profile of the last preprocess that passed validation (``preprocess.profile``)."""
        return self.workdir / "preprocess" / "profile.json"

    @property
    def checkpoints(self) -> Location:
        return self.workdir / "checkpoints"

    def latest_run(self, kind: str) -> Location:
        """The MLflow run id of ``kind``'s latest training here, so that evaluate and resume find it
        (kinds sharing one preprocessed data set each keep their own model and run)."""
        return self.workdir / "runs" / f"{kind}.json"

    def stage_record(self, name: str) -> Location:
        """What a stage's last success read and wrote, to skip it when nothing changed (freshness)."""
        return self.workdir / "stages" / f"{name}.json"

    def trained_model(self, run_id: str) -> Location:
        return self.checkpoints / run_id / "model.keras"

    def checkpoint(self, run_id: str) -> Location:
        return self.checkpoints / run_id / "checkpoint.npz"

    def best_weights(self, run_id: str) -> Location:
        """The best epoch's weights so far, kept by early stopping."""
        return self.checkpoints / run_id / "best.npz"

    def epoch_metrics(self, run_id: str) -> Location:
        """The epoch metrics rank 0 recorded in the current training attempt, for the driver to send."""
        return self.checkpoints / run_id / "epoch_metrics.json"

    def pending_metrics(self, run_id: str) -> Location:
        """Epoch metrics a tracking outage kept, to be sent when the server answers."""
        return self.checkpoints / run_id / "unsent_metrics.json"

    def rank_errors(self, run_id: str) -> Location:
        return self.checkpoints / run_id / "rank_errors"
