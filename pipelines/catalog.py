"""Named data sets of a run and where they live: every location derives from ``workdir`` here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Catalog:
    """Locations of every data set and artifact a pipeline run reads or writes."""

    workdir: Path

    @classmethod
    def for_workdir(cls, workdir: str | Path) -> Catalog:
        return cls(Path(workdir).resolve())

    @property
    def demo_images(self) -> Path:
        return self.workdir / "raw" / "digits"

    @property
    def demo_texts(self) -> Path:
        return self.workdir / "raw" / "reviews.tsv"

    @property
    def listing(self) -> Path:
        """The files ingest saw (relpath, size), one Parquet file per Spark task."""
        return self.workdir / "ingest" / "listing"

    @property
    def ingested(self) -> Path:
        return self.workdir / "ingest" / "records.parquet"

    @property
    def quarantine(self) -> Path:
        return self.workdir / "ingest" / "quarantine.parquet"

    @property
    def ingest_report(self) -> Path:
        return self.workdir / "ingest" / "report.json"

    def split(self, name: str) -> Path:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self.workdir / "preprocess" / f"{name}.parquet"

    @property
    def transform(self) -> Path:
        return self.workdir / "preprocess" / "transform.json"

    @property
    def preprocess_report(self) -> Path:
        return self.workdir / "preprocess" / "report.json"

    @property
    def checkpoints(self) -> Path:
        return self.workdir / "checkpoints"

    def latest_run(self, kind: str) -> Path:
        """The MLflow run id of ``kind``'s latest training here, so that evaluate and resume find it
        (kinds sharing one preprocessed data set each keep their own model and run)."""
        return self.workdir / "runs" / f"{kind}.json"

    def trained_model(self, run_id: str) -> Path:
        return self.checkpoints / run_id / "model.keras"

    def checkpoint(self, run_id: str) -> Path:
        return self.checkpoints / run_id / "checkpoint.npz"

    def best_weights(self, run_id: str) -> Path:
        """The best epoch's weights so far, kept by early stopping."""
        return self.checkpoints / run_id / "best.npz"

    def pending_metrics(self, run_id: str) -> Path:
        """Epoch metrics a tracking outage kept, to be sent when the server answers."""
        return self.checkpoints / run_id / "unsent_metrics.json"

    def rank_errors(self, run_id: str) -> Path:
        return self.checkpoints / run_id / "rank_errors"
