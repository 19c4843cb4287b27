"""The MLflow model registry: versions, the champion alias and the tags that explain them."""

from __future__ import annotations

from pipelines.track.runs import mlflow_client

CHAMPION = "champion"  # the registry alias of the model that serves


def registered_version(tracking_uri: str, name: str, run_id: str) -> str:
    """The version of registered model ``name`` that holds the run's model, registering it when
    training did not."""
    import mlflow

    for version in mlflow_client(tracking_uri).search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        return str(version.version)
    mlflow.set_tracking_uri(tracking_uri)
    return str(mlflow.register_model(f"runs:/{run_id}/model", name).version)


def champion_version(tracking_uri: str, name: str) -> str | None:
    """The version of ``name`` the ``champion`` alias points at; None when it has none."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client(tracking_uri).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def make_champion(tracking_uri: str, name: str, version: str) -> None:
    mlflow_client(tracking_uri).set_registered_model_alias(name, CHAMPION, version)


def tag_run_and_version(
    tracking_uri: str, run_id: str, name: str, version: str, tags: dict[str, str]
) -> None:
    """Set ``tags`` on the run and on the registered version alike."""
    client = mlflow_client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)
