"""The model a run logs, as an MLflow pyfunc: logged with its transform, code and pins; found,
downloaded and loaded for evaluation, scoring and serving.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.core.config import PipelineConfig
from pipelines.track.runs import mlflow_client


def log_transform(run_id: str, transform_file: Path) -> None:
    """Log the fitted transform, its label map and what else it has to read on its own (a text
    transform's vocabulary: ``readable_files``)."""
    import mlflow

    from pipelines.preprocess.transforms import load_transform

    transform = load_transform(transform_file)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(transform_file), "transform")
        mlflow.log_dict({name: i for i, name in enumerate(transform.class_names)}, "transform/label_map.json")
        for name, text in transform.readable_files().items():
            mlflow.log_text(text, f"transform/{name}")


def requirements() -> list[str]:
    """What a serving environment needs to load a logged model."""
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in ("tensorflow-cpu", "keras", "numpy", "pandas", "mlflow", "pyarrow", "pyspark")
    ]


def log_model(config: PipelineConfig, run_id: str, model_file: Path, transform_file: Path) -> str:
    """Log the trained model as the kind's MLflow pyfunc (raw input in); return its URI."""
    import mlflow
    from mlflow.models import infer_signature

    from pipelines.kinds import kind_of
    from pipelines.preprocess.transforms import load_transform

    transform = load_transform(transform_file)
    python_model, example, output = kind_of(config).part("served_model")(transform, config.model)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts={"keras_model": str(model_file), "transform": str(transform_file)},
            # A signature but no input example: with one, MLflow loads the model in this process to
            # check it (5.7 s measured, mostly importing TensorFlow, which the driver never needs
            # otherwise). The evaluate stage loads the logged model and scores the test split
            # with it right after: a model that cannot serve fails there.
            signature=None if example is None else infer_signature(example, output),
            code_paths=_code_paths(python_model),
            pip_requirements=requirements(),
            registered_model_name=config.mlflow.registered_model,
        )
    if config.mlflow.registered_model:
        client = mlflow_client(config.tracking_uri)
        client.set_registered_model_alias(
            config.mlflow.registered_model, "candidate", info.registered_model_version
        )
    return f"runs:/{run_id}/model"


def _code_paths(python_model) -> list[str]:
    """The code a logged model loads with: the ``pipelines`` package, and the package its pyfunc class
    comes from when that is another (a kind installed from outside this repository)."""
    import importlib

    top_level = (__name__.partition(".")[0], type(python_model).__module__.partition(".")[0])
    return sorted({str(Path(importlib.import_module(name).__file__).parent) for name in top_level})


def model_files(model_uri: str, tracking_uri: str) -> str:
    """Where the files of the model at ``model_uri`` (``runs:/``, ``models:/``) are: a ``file:``,
    ``s3:`` or ``mlflow-artifacts:`` URI that a Spark task loads without opening the tracking store
    (for SQLite that is SQLAlchemy and a schema check: 1.3 s of a task's 2.7 s load, measured).
    A model logged without a logged-model id (before MLflow 3) keeps its ``model_uri``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model_id = mlflow.models.get_model_info(model_uri).model_id
    return mlflow_client(tracking_uri).get_logged_model(model_id).artifact_location if model_id else model_uri


def download_model(tracking_uri: str, model_uri: str, target: Path) -> tuple[Path, Path]:
    """Fetch the model at ``model_uri`` into ``target``: (its folder, its saved transform).

    Raises:
        DataError: when it cannot be loaded, or is not a dlfusion model (no saved transform).
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from pipelines.core.errors import DataError

    mlflow.set_tracking_uri(tracking_uri)
    try:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target)))
        artifacts = Model.load(str(path)).flavors["python_function"].get("artifacts", {})
    except MlflowException as err:
        raise DataError(model_uri, f"cannot load the model: {str(err).splitlines()[0]}") from None
    if "transform" not in artifacts:
        raise DataError(model_uri, "not a dlfusion classifier (no saved transform)")
    return path, path / artifacts["transform"]["path"]


def download_weights(tracking_uri: str, model_uri: str, target: Path) -> tuple[Path, Path]:
    """Fetch the model at ``model_uri`` into ``target``: (its Keras file, its saved transform).

    Raises:
        DataError: as ``download_model``, or when the model holds no Keras file.
    """
    from mlflow.models import Model

    from pipelines.core.errors import DataError

    path, transform = download_model(tracking_uri, model_uri, target)
    artifacts = Model.load(str(path)).flavors["python_function"].get("artifacts", {})
    if "keras_model" not in artifacts:
        raise DataError(model_uri, "holds no Keras model to start from")
    return path / artifacts["keras_model"]["path"], transform


def load_model(location: str, tracking_uri: str):
    """The logged pyfunc at ``location``: a ``runs:/`` or ``models:/`` URI, or its files
    (``model_files``, in a Spark task or on a rank). The tracking URI is set first, which files on a
    tracking server's artifact store need."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(location)


def run_of(model_uri: str, tracking_uri: str) -> str:
    """The id of the run that logged the model at ``model_uri`` (``runs:/`` or ``models:/``)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.models.get_model_info(model_uri).run_id
