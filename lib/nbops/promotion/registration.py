"""Register a model version once: a model the registry already holds is reused, from any
copy of the project.

A registered version is the same model as the one being registered when any of these
matches (checked in this order; the first that matches is reported):

- its model files: ``nbops.model_sha256``, the digest of the folder's relative paths and
  file hashes (``models.model_digest``), the same in a copied or moved project;
- its model folder: ``nbops.model_path`` written portably (``records.relocate.portable``:
  ``<runs>/<run id>/models/<name>``), so the same run's model matches wherever the project
  lies now (this covers versions registered before the digest was tagged);
- its MLflow source: ``runs:/<MLflow run id>/<artifact path>`` (a copied project keeps
  its runs' MLflow ids), when the model's run is tracked (has an MLflow run id).

Invariant: finding a match and creating a version happen under the model's registration
lock (``ledger.locked(..., "register")``), so two registrations of the same model at once
make one version, and a model is never registered twice under one name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ..errors import RegistryNotFound
from ..models import model_digest
from ..records.relocate import portable
from ..tracking import ledger, registry
from .service import where

DIGEST_TAG = "nbops.model_sha256"
PATH_TAG = "nbops.model_path"


class Registration(TypedDict):
    """The version that holds the model, and whether it was registered just now."""

    version: int
    reused: bool  # True: an existing version holds the same model; nothing was registered
    matched: str  # what made it the same model (empty when registered now)
    model_sha256: str


def same_model(version: registry.ModelVersion, digest: str, model_path: str,
               source: str | None) -> str:
    """Why ``version`` holds the model with this digest, folder and MLflow source (None: the
    run is not tracked); "" when it does not."""
    tags = version["tags"]
    if tags.get(DIGEST_TAG) == digest:
        return f"the same model files: sha256 {digest[:12]}"
    registered = tags.get(PATH_TAG, "")
    if registered and portable(registered) == portable(model_path):
        return f"the same model folder: {portable(model_path)}"
    if source is not None and version["source"] == source:
        return f"the same MLflow source: {source}"
    return ""


def register_model(model_name: str, model_path: str | Path, *, run_id: str | None,
                   artifact_path: str = "models/model", tags: dict[str, str] | None = None,
                   alias: str | None = "challenger", runs_dir: str | Path | None = None,
                   tracking_uri: str | None = None) -> Registration:
    """Register the model in folder ``model_path`` (logged to MLflow run ``run_id`` at
    ``artifact_path``; None: a run not tracked) as a new version of ``model_name``, unless
    a version already holds it: then that version is returned (``reused``) and nothing is
    written.

    A new version gets ``tags`` plus ``nbops.model_path`` and ``nbops.model_sha256``, and
    ``alias`` (when given) is moved to it through the ledger.

    Raises:
        NbopsError: ``model_path`` is not a folder.
    """
    place = where(runs_dir, tracking_uri)
    uri = place["tracking_uri"]
    path = str(model_path)
    digest = model_digest(path)
    source = f"runs:/{run_id}/{artifact_path}" if run_id else None
    with ledger.locked(place["ledger_dir"], model_name, "register"):
        try:
            versions = registry.list_versions(model_name, uri)
        except RegistryNotFound:  # the model's first version
            versions = []
        for version in versions:
            matched = same_model(version, digest, path, source)
            if matched:
                return {"version": version["version"], "reused": True, "matched": matched,
                        "model_sha256": digest}
        created = registry.register_version(
            model_name, run_id=run_id, artifact_path=artifact_path,
            tags={**(tags or {}), PATH_TAG: path, DIGEST_TAG: digest}, alias=alias,
            tracking_uri=uri)
    return {"version": created, "reused": False, "matched": "", "model_sha256": digest}
