"""The embedded MLflow database (SQLite), created from an empty copy that MLflow itself migrated.

MLflow creates a new SQLite database by running every schema migration since its first release
(alembic, some sixty steps): 2.6 s of CPU on the demo's driver, measured with py-spy, while the
ranks import TensorFlow on the same cores. The first database a machine makes for an MLflow version
is kept empty in the user's cache (``DLFUSION_CACHE``, default ``~/.cache/dlfusion``), and every later
new database is a copy of it: the same schema, made by the same code. MLflow then adds the default
experiment with the workdir's own artifact root, as it does for a database it migrated itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from pipelines.core.locations import cache_folder

log = logging.getLogger(__name__)


def prepare(tracking_uri: str) -> None:
    """Create the SQLite database of a ``sqlite:///`` tracking URI that does not exist yet, as a copy
    of the migrated empty one (made first when missing). Other URIs, an existing database, and any
    failure here are left to MLflow, which then migrates a new database itself."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if database.exists() or not database.parent.is_dir():
        return
    try:
        _copy_new(_empty_database(), database)
    except Exception as err:  # a speed-up only: MLflow creates the database as it would anyway
        log.debug("MLflow database %s left to MLflow: %s", database, err)


def _empty_database() -> Path:
    """The migrated empty database of this MLflow version, made now if the cache has none."""
    import mlflow
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template = cache_folder() / "mlflow" / f"empty-{mlflow.__version__}.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    partial = template.with_name(f".{template.name}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(partial, template)  # whole or absent, for processes making it at the same time
    return template


def _copy_new(template: Path, database: Path) -> None:
    """Copy ``template`` to ``database`` unless something created it meanwhile (never overwritten)."""
    import shutil

    partial = database.with_name(f".{database.name}.{os.getpid()}")
    shutil.copyfile(template, partial)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(partial, database)
    finally:
        partial.unlink(missing_ok=True)
