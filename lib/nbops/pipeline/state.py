"""The outside state a stage declared it reads (``nbops.reads``), as plain data for its key.

For each read (see ``contract.reads``) with the stage's values, :func:`read_state` says
what the registry holds now:

- a registered model: every alias and the version it points to, and every version's
  identity;
- one version (by number, or by the alias it is looked up through): the version the read
  resolves to, and its identity.

A version's identity is its MLflow run and source, its tags (paths into runs written
portably; the ``nbops.promotion.*`` tags left out: they repeat the alias moves) and the
content of its model folder (``nbops.model_path``, hashed). A missing store, model,
version or alias is part of the state too ("absent"), so a stage that found nothing runs
again once something is there; a store that cannot be read makes the stage run. The
snapshot a stage's cache key holds is taken when its run has ended: a stage that changes
what it reads (``register`` registers and promotes) is served from the cache while the
registry stays as that run left it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RegistryError
from ..records.relocate import portable, rebase
from ..tracking.uri import NO_TRACKING
from .content import content_of

if TYPE_CHECKING:
    from ..contract.template import Template
    from ..tracking.registry import ModelVersion

PROMOTION_TAGS = "nbops.promotion."


def resolved_reads(template: Template, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """The template's reads with the stage's values (reads of an empty model dropped)."""
    found = (read.resolve(parameters) for read in template.reads)
    return [read for read in found if read is not None]


def read_state(reads: list[dict[str, Any]], uri: str, runs_dir: Path) -> list[dict[str, Any]]:
    """What each read finds now (see the module doc), in the order of ``reads``."""
    if not reads:
        return []
    if uri == NO_TRACKING or (uri.startswith("sqlite:///") and
                              not Path(uri[len("sqlite:///"):]).is_file()):
        return [{"read": read, "store": "absent"} for read in reads]
    found = []
    for read in reads:
        try:
            found.append(_one(read, uri, runs_dir))
        except Exception as exc:  # noqa: BLE001 - any store trouble: the stage runs
            found.append({"read": read, "unreadable": f"{type(exc).__name__}: {exc}"})
    return found


def unreadable(state: list[dict[str, Any]]) -> str | None:
    """Why some read could not be made (then the stage is never served from the cache)."""
    return next((str(e["unreadable"]) for e in state if "unreadable" in e), None)


def describe(state: list[dict[str, Any]]) -> str:
    """One line for people: ``nbops-demo: champion=v1, challenger=v1; 1 version``."""
    parts = []
    for entry in state:
        read = entry["read"]
        if "aliases" in entry:
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(entry["aliases"].items()))
            parts.append(f"{read['model']}: {aliases or 'no alias'}; "
                         f"{len(entry['versions'])} version(s)")
        elif "version" in read or "alias" in read:
            how = f"@{read['alias']}" if "alias" in read else f" v{read['version']}"
            got = entry.get("version")
            parts.append(f"{read['model']}{how}: " + (f"v{got}" if got else "absent"))
        else:
            parts.append(f"{read['model']}: absent")
    return "; ".join(parts)


def _one(read: dict[str, Any], uri: str, runs_dir: Path) -> dict[str, Any]:
    from ..tracking import registry

    name = read["model"]
    if "version" not in read and "alias" not in read:
        try:
            versions = registry.list_versions(name, tracking_uri=uri)
        except RegistryError:
            return {"read": read, "model": "absent"}
        aliases = {a: v["version"] for v in versions for a in v["aliases"]}
        return {"read": read, "aliases": aliases,
                "versions": {str(v["version"]): _identity(v, runs_dir) for v in versions}}
    found: ModelVersion | None
    if "version" in read:
        try:
            found = registry.get_version(name, int(read["version"]), tracking_uri=uri)
        except RegistryError:
            found = None
    else:
        found = registry.version_by_alias(name, str(read["alias"]), tracking_uri=uri)
    if found is None:
        return {"read": read, "version": None}
    return {"read": read, "version": found["version"], "identity": _identity(found, runs_dir)}


def _identity(version: ModelVersion, runs_dir: Path) -> dict[str, Any]:
    tags = {k: v for k, v in sorted(version["tags"].items())
            if not k.startswith(PROMOTION_TAGS)}
    model = tags.get("nbops.model_path")
    folder = Path(rebase(model, runs_dir)) if model else None
    return {"run_id": version["run_id"], "source": version["source"], "tags": portable(tags),
            "model": content_of(folder) if folder is not None and folder.exists() else None}
