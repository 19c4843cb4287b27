"""The embedded MLflow database: a new one is a copy of an empty database MLflow migrated itself."""

from __future__ import annotations

import sqlite3

from pipelines.track import database


def _schema(path) -> list[tuple]:
    """Every table, index and constraint. A table's lines are compared as a set: MLflow's own
    migrations write a table's constraints in a different order from one process to the next."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return sorted((kind, name, table, sorted(line.strip(" ,") for line in (sql or "").splitlines()))
                  for kind, name, table, sql in rows)  # fmt: skip


def test_a_new_database_has_the_schema_mlflow_makes_and_the_experiments_of_its_own_uri(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("DLFUSION_CACHE", str(tmp_path / "cache"))
    copied, migrated = tmp_path / "copied.db", tmp_path / "migrated.db"
    database.prepare(f"sqlite:///{copied}")
    assert copied.is_file() and (tmp_path / "cache" / "mlflow" / f"empty-{mlflow.__version__}.db").is_file()
    for path in (copied, migrated):  # MLflow opens the copy as its own, and migrates the other itself
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}")
        client.create_experiment("training", artifact_location=(tmp_path / path.stem).as_uri())
    assert _schema(copied) == _schema(migrated)
    experiment = mlflow.MlflowClient(tracking_uri=f"sqlite:///{copied}").get_experiment_by_name("training")
    assert experiment.artifact_location == (tmp_path / "copied").as_uri()


def test_an_existing_database_is_never_replaced_and_other_uris_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("DLFUSION_CACHE", str(tmp_path / "cache"))
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    database.prepare(f"sqlite:///{existing}")
    database.prepare("http://127.0.0.1:5000")
    assert existing.read_bytes() == b"not touched" and not (tmp_path / "cache").exists()
