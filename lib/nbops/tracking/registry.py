"""The model registry as library functions: register, look up, promote, roll back.

Built on MLflow's Model Registry with explicit clients (no global state). MLflow keeps only
the current target of an alias; nbops keeps each alias's history as JSON in a tag of the
registered model (``nbops.alias_history.<alias>``), so a promotion can be rolled back and
every move says when and why it happened.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import RegistryError
from .uri import current_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HISTORY_TAG = "nbops.alias_history."


class ModelVersion(TypedDict):
    """One registered model version, as nbops reports it."""

    name: str
    version: int
    aliases: list[str]
    tags: dict[str, str]
    run_id: str | None
    source: str


class AliasMove(TypedDict):
    """One entry of an alias's history."""

    version: int
    previous: int | None
    at: str
    reason: str


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` (default: the runs folder's store)."""
    from mlflow.tracking import MlflowClient

    from ..models import guard_pickle

    guard_pickle()
    if tracking_uri is None:
        tracking_uri = current_uri()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register_version(model_name: str, *, run_id: str, artifact_path: str,
                     tags: dict[str, str], alias: str | None = "challenger",
                     tracking_uri: str | None = None) -> int:
    """Register ``runs:/{run_id}/{artifact_path}`` as a new version; set ``alias`` on it.

    The registered model is created when it does not exist yet. Returns the new version.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.create_registered_model(
            model_name, description="Registered by nbops")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    created = mlflow_client.create_model_version(
        model_name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags)
    version = int(created.version)
    if alias:
        _move_alias(mlflow_client, model_name, alias, version, "registered")
    return version


def version_by_alias(model_name: str, alias: str, tracking_uri: str | None = None
                     ) -> ModelVersion | None:
    """The version ``alias`` points to, or None when the alias (or model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return _version(found)


def get_version(model_name: str, version: int, tracking_uri: str | None = None
                ) -> ModelVersion:
    """One version of a registered model.

    Raises:
        RegistryError: no such model or version.
    """
    return _get_version(client(tracking_uri), model_name, version)


def _get_version(mlflow_client: MlflowClient, model_name: str, version: int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return _version(mlflow_client.get_model_version(model_name, str(version)))
    except MlflowException:
        raise RegistryError(f"model {model_name!r} has no version {version}") from None


def promote(model_name: str, version: int, alias: str = "champion", *, reason: str = "",
            tracking_uri: str | None = None) -> None:
    """Point ``alias`` at ``version`` and append the move to the alias's history."""
    mlflow_client = client(tracking_uri)
    _get_version(mlflow_client, model_name, version)
    _move_alias(mlflow_client, model_name, alias, version, reason or "promoted")


def rollback(model_name: str, alias: str = "champion", *, reason: str = "",
             tracking_uri: str | None = None) -> int:
    """Point ``alias`` back at the version it had before its last move; returns it.

    Raises:
        RegistryError: the alias has no earlier version to go back to.
    """
    mlflow_client = client(tracking_uri)
    history = _history(mlflow_client, model_name, alias)
    if not history or history[-1]["previous"] is None:
        raise RegistryError(f"alias {alias!r} of model {model_name!r} has no earlier version "
                            "to roll back to (see its history with alias_history)")
    target = history[-1]["previous"]
    assert target is not None
    _move_alias(mlflow_client, model_name, alias, target,
                reason or f"rollback from v{history[-1]['version']}")
    return target


def alias_history(model_name: str, alias: str, tracking_uri: str | None = None
                  ) -> list[AliasMove]:
    """Every move of ``alias``, oldest first."""
    return _history(client(tracking_uri), model_name, alias)


def _history(mlflow_client: MlflowClient, model_name: str, alias: str) -> list[AliasMove]:
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(model_name)
    except MlflowException:
        raise RegistryError(f"no registered model {model_name!r}") from None
    raw = (model.tags or {}).get(HISTORY_TAG + alias)
    moves: list[AliasMove] = json.loads(raw) if raw else []
    return moves


def _move_alias(mlflow_client: MlflowClient, model_name: str, alias: str, version: int,
                reason: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        previous: int | None = int(
            mlflow_client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        previous = None
    with contextlib.redirect_stdout(sys.stderr):
        mlflow_client.set_registered_model_alias(model_name, alias, str(version))
    history = _history(mlflow_client, model_name, alias)
    history.append({"version": version, "previous": previous, "reason": reason,
                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    mlflow_client.set_registered_model_tag(model_name, HISTORY_TAG + alias,
                                           json.dumps(history[-50:]))


def _version(found: Any) -> ModelVersion:
    return {"name": str(found.name), "version": int(found.version),
            "aliases": [str(a) for a in (found.aliases or [])],
            "tags": {str(k): str(v) for k, v in (found.tags or {}).items()},
            "run_id": found.run_id, "source": str(found.source)}
