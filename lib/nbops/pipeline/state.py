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

The registry's answers for the embedded SQLite store are remembered in the runs folder
(``.registry-answers.json``) with the store's fingerprint: the size, modification time and
inode of the database and of its ``-wal`` and ``-journal`` files, and SQLite's own file
change counter (header bytes 24-27, bumped by every committed write). While the fingerprint
is unchanged the answers are read from there, so an unchanged pipeline is decided without
importing MLflow (4 of the 6 s of a fully cached demo rerun); any write to the store, by
nbops or anyone, changes the fingerprint and the registry is asked again. Model folders'
contents are still hashed on every read (``content_of`` remembers them by stat).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

from ..errors import NotRegularFileError, RegistryError
from ..records.relocate import portable, rebase
from ..tracking.uri import NO_TRACKING
from ..util.files import atomic_write_json, open_regular, read_regular
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
    answers = _Answers.open(uri, runs_dir)
    found = []
    for read in reads:
        try:
            found.append(_one(read, runs_dir, answers))
        except Exception as exc:  # noqa: BLE001 - any store trouble: the stage runs
            found.append({"read": read, "unreadable": f"{type(exc).__name__}: {exc}"})
    answers.save()
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


def _one(read: dict[str, Any], runs_dir: Path, answers: _Answers) -> dict[str, Any]:
    if "version" not in read and "alias" not in read:
        versions = answers.ask(read)
        if versions is None:
            return {"read": read, "model": "absent"}
        aliases = {a: v["version"] for v in versions for a in v["aliases"]}
        return {"read": read, "aliases": aliases,
                "versions": {str(v["version"]): _identity(v, runs_dir) for v in versions}}
    found: ModelVersion | None = answers.ask(read)
    if found is None:
        return {"read": read, "version": None}
    return {"read": read, "version": found["version"], "identity": _identity(found, runs_dir)}


def _ask_registry(read: dict[str, Any], uri: str) -> Any:
    """The registry's raw answer for ``read``: a model's versions (None: no such model),
    or the version it resolves to (None: absent)."""
    from ..tracking import registry

    name = read["model"]
    if "version" not in read and "alias" not in read:
        try:
            return registry.list_versions(name, tracking_uri=uri)
        except RegistryError:
            return None
    if "version" in read:
        try:
            return registry.get_version(name, int(read["version"]), tracking_uri=uri)
        except RegistryError:
            return None
    return registry.version_by_alias(name, str(read["alias"]), tracking_uri=uri)


ANSWERS_FILE = ".registry-answers.json"


class _Answers:
    """The registry's answers, remembered in the runs folder while the embedded store's
    fingerprint holds (see the module doc); any other store is always asked."""

    def __init__(self, uri: str, file: Path | None, fingerprint: list[Any] | None) -> None:
        self.uri, self.file, self.fingerprint = uri, file, fingerprint
        self.known: dict[str, Any] = {}
        self.changed = False

    @classmethod
    def open(cls, uri: str, runs_dir: Path) -> _Answers:
        fingerprint = store_fingerprint(uri)
        if fingerprint is None:
            return cls(uri, None, None)
        file = runs_dir / ANSWERS_FILE
        answers = cls(uri, file, fingerprint)
        try:
            saved = json.loads(read_regular(file))
        except (OSError, ValueError, NotRegularFileError):
            return answers  # none yet, unreadable or not a regular file: ask the registry
        if isinstance(saved, dict) and saved.get("uri") == uri and \
                saved.get("fingerprint") == fingerprint and isinstance(saved.get("answers"), dict):
            answers.known = saved["answers"]
        return answers

    def ask(self, read: dict[str, Any]) -> Any:
        key = json.dumps(read, sort_keys=True)
        if key not in self.known:
            self.known[key] = _ask_registry(read, self.uri)
            self.changed = True
        return self.known[key]

    def save(self) -> None:
        """Keep the answers when the store did not change while they were asked."""
        if self.file is None or not self.changed or \
                store_fingerprint(self.uri) != self.fingerprint:
            return
        with contextlib.suppress(OSError):
            atomic_write_json(self.file, {"uri": self.uri, "fingerprint": self.fingerprint,
                                          "answers": self.known})


def store_fingerprint(uri: str) -> list[Any] | None:
    """The embedded SQLite store's fingerprint (None for any other store, or none yet)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///"):])
    parts: list[Any] = []
    for suffix in ("", "-wal", "-journal"):
        try:
            stat = os.stat(f"{path}{suffix}")
        except OSError:
            parts.append(None)
            continue
        if not S_ISREG(stat.st_mode):
            return None
        parts.append([stat.st_size, stat.st_mtime_ns, stat.st_ino])
    if parts[0] is None:
        return None
    try:
        with open_regular(path) as handle:
            header = handle.read(100)
    except (OSError, NotRegularFileError):
        return None
    parts.append(int.from_bytes(header[24:28], "big") if len(header) == 100 else None)
    return parts


def _identity(version: ModelVersion, runs_dir: Path) -> dict[str, Any]:
    tags = {k: v for k, v in sorted(version["tags"].items())
            if not k.startswith(PROMOTION_TAGS)}
    model = tags.get("nbops.model_path")
    folder = Path(rebase(model, runs_dir)) if model else None
    return {"run_id": version["run_id"], "source": version["source"], "tags": portable(tags),
            "model": content_of(folder) if folder is not None and folder.exists() else None}
