"""The model registry as library functions: register, look up, promote, roll back.

Built on MLflow's Model Registry with explicit clients (no global state). MLflow keeps only
the current target of an alias; every move nbops makes is appended to the promotion ledger
(``ledger``: who, when, why, evidence), under the ledger's lock so that a compare-and-set
(``expected``: the version the caller saw) cannot race another promotion. Each move is
mirrored to MLflow: the alias's history as JSON in a tag of the registered model
(``nbops.alias_history.<alias>``) and the move itself in a tag of the version it points
to (``nbops.promotion.<alias>``), so the MLflow UI shows it too.

A move to the version the alias already holds is no move: nothing is written (no ledger
entry, no alias write, no tag), so a rollback always returns to a *different* version; the
no-op entries (``previous == version``) that older nbops wrote are skipped by
:func:`rollback`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from ..errors import PromotionBlocked, RegistryError, RegistryNotFound
from ..util.identity import current_user
from . import ledger
from .uri import current_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HISTORY_TAG = "nbops.alias_history."
PROMOTION_TAG = "nbops.promotion."
UNSET = -1  # ``expected`` value meaning: the alias must not be set yet


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
    if not tracking_uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with _READY_LOCK:
        if tracking_uri in _READY:
            return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # the first client of a SQLite store in this process opens it (creating and
        # migrating it when new) under the lock every nbops writer of it takes
        # (``.mlflow.lock`` beside it): MlflowClient creates the store as it is made, and
        # six ``nbops models ls`` on a new runs folder at once left five with alembic
        # tracebacks ("expected to match one row ... 0 found")
        from filelock import FileLock

        path = Path(tracking_uri[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.parent / ".mlflow.lock"), timeout=600):
            mlflow_client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            mlflow_client.search_registered_models(max_results=1)  # the registry's store
        _READY.add(tracking_uri)
        return mlflow_client


_READY: set[str] = set()  # SQLite stores opened under the lock in this process
_READY_LOCK = threading.Lock()


def register_version(model_name: str, *, run_id: str | None, artifact_path: str,
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
        raise RegistryNotFound(f"model {model_name!r} has no version {version} (see: nbops "
                               f"models show {model_name})") from None


def promote(model_name: str, version: int, alias: str = "champion", *, reason: str = "",
            tracking_uri: str | None = None, expected: int | None = None,
            evidence: list[str] | None = None, who: str | None = None) -> bool:
    """Point ``alias`` at ``version``; the move goes to the ledger and the alias history.

    Args:
        expected: compare-and-set: the version the alias must hold now (``UNSET``: none).

    Returns:
        True if the alias moved; False if it already pointed at ``version`` (then nothing
        was written anywhere).

    Raises:
        RegistryError: no such version. PromotionBlocked: the alias moved since.
    """
    mlflow_client = client(tracking_uri)
    _get_version(mlflow_client, model_name, version)
    return _move_alias(mlflow_client, model_name, alias, version, reason or "promoted",
                       expected=expected, evidence=evidence, who=who) is not None


def rollback(model_name: str, alias: str = "champion", *, reason: str = "",
             tracking_uri: str | None = None, who: str | None = None) -> int:
    """Point ``alias`` back at the version it had before its last move; returns it.

    The last move is the last one that changed the version: entries that "moved" the alias
    to the version it already held (written by older nbops) are skipped, so the target
    always differs from the current version.

    Raises:
        RegistryError: the alias has no earlier version to go back to.
    """
    mlflow_client = client(tracking_uri)
    moves = [m for m in _history(mlflow_client, model_name, alias)
             if m["previous"] != m["version"]]
    target = moves[-1]["previous"] if moves else None
    if target is None:
        raise RegistryError(f"alias {alias!r} of model {model_name!r} has no earlier version "
                            "to roll back to (see: nbops models history)")
    _move_alias(mlflow_client, model_name, alias, target,
                reason or f"rollback from v{moves[-1]['version']}",
                expected=moves[-1]["version"], who=who)
    return target


def current_target(model_name: str, alias: str, tracking_uri: str | None = None
                   ) -> int | None:
    """The version ``alias`` points to in MLflow now (None: unset)."""
    found = version_by_alias(model_name, alias, tracking_uri)
    return found["version"] if found else None


def alias_history(model_name: str, alias: str, tracking_uri: str | None = None
                  ) -> list[AliasMove]:
    """Every move of ``alias``, oldest first."""
    return _history(client(tracking_uri), model_name, alias)


def _history(mlflow_client: MlflowClient, model_name: str, alias: str) -> list[AliasMove]:
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(model_name)
    except MlflowException:
        raise RegistryNotFound(f"no registered model {model_name!r} (see: nbops models ls)"
                               ) from None
    raw = (model.tags or {}).get(HISTORY_TAG + alias)
    moves: list[AliasMove] = json.loads(raw) if raw else []
    return moves


def _move_alias(mlflow_client: MlflowClient, model_name: str, alias: str, version: int,
                reason: str, *, expected: int | None = None, evidence: list[str] | None = None,
                who: str | None = None) -> ledger.LedgerEntry | None:
    """Move ``alias`` under the ledger's lock, after the compare-and-set check; None (and
    nothing written) when it already points at ``version``."""
    from mlflow.exceptions import MlflowException

    runs_dir = ledger.home(str(mlflow_client.tracking_uri))
    who = current_user(who)  # a bad name is refused before anything moves
    with ledger.locked(runs_dir, model_name):
        ledger.ensure_intact(runs_dir, model_name)  # a broken ledger: nothing moves
        try:
            previous: int | None = int(
                mlflow_client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException:
            previous = None
        if expected is not None and (previous if previous is not None else UNSET) != expected:
            now = f"v{previous}" if previous is not None else "unset"
            was = f"v{expected}" if expected != UNSET else "unset"
            raise PromotionBlocked(f"alias {alias!r} of {model_name!r} is {now}, not {was} as "
                                   "expected: someone moved it meanwhile; look again (nbops "
                                   f"models show {model_name}) and retry")
        if previous == version:
            return None
        with contextlib.redirect_stdout(sys.stderr):
            mlflow_client.set_registered_model_alias(model_name, alias, str(version))
        entry = ledger.append(runs_dir, model_name, "move", alias, version, previous=previous,
                              reason=reason, evidence=evidence, who=who)
    history = _history(mlflow_client, model_name, alias)
    history.append({"version": version, "previous": previous, "reason": reason,
                    "at": entry["at"]})
    mlflow_client.set_registered_model_tag(model_name, HISTORY_TAG + alias,
                                           json.dumps(history[-50:]))
    mlflow_client.set_model_version_tag(model_name, str(version), PROMOTION_TAG + alias,
                                        json.dumps(entry))
    return entry


def _version(found: Any) -> ModelVersion:
    return {"name": str(found.name), "version": int(found.version),
            "aliases": [str(a) for a in (found.aliases or [])],
            "tags": {str(k): str(v) for k, v in (found.tags or {}).items()},
            "run_id": found.run_id, "source": str(found.source)}


class RegisteredModel(TypedDict):
    name: str
    aliases: dict[str, int]
    latest_version: int | None
    description: str


def list_models(tracking_uri: str | None = None) -> list[RegisteredModel]:
    """Every registered model, by name."""
    found = client(tracking_uri).search_registered_models(max_results=1000)
    return sorted(({"name": str(m.name),
                    "aliases": {str(k): int(v) for k, v in (m.aliases or {}).items()},
                    "latest_version": max((int(v.version) for v in m.latest_versions or []),
                                          default=None),
                    "description": str(m.description or "")} for m in found),
                  key=lambda m: m["name"])


def list_versions(model_name: str, tracking_uri: str | None = None) -> list[ModelVersion]:
    """Every version of ``model_name``, oldest first.

    Raises:
        RegistryError: no such model.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(tracking_uri)
    try:
        model = mlflow_client.get_registered_model(model_name)
    except MlflowException:
        raise RegistryNotFound(f"no registered model {model_name!r} (see: nbops models ls)"
                               ) from None
    found = mlflow_client.search_model_versions(f"name = '{_quoted(model_name)}'",
                                                max_results=10_000)
    aliases: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(int(version), []).append(str(alias))
    versions = [_version(v) for v in found]
    for version in versions:  # search results do not always carry aliases
        version["aliases"] = sorted(aliases.get(version["version"], []))
    return sorted(versions, key=lambda v: v["version"])


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")
