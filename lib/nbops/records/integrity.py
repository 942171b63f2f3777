"""Integrity of run folders: every file but ``run.json`` is listed with its sha256.

``verify`` re-hashes a folder and names each missing, changed or unlisted file.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import RecordError
from ..util.files import sha256_file
from .store import RunStore
from .types import Artifact, RunRecord

_SKIP = re.compile(r"^\..*\.tmp$|^run\.json$|\.lock$")


def hash_artifacts(run_dir: Path) -> list[Artifact]:
    """Every file of the run folder but ``run.json``, with sha256 and size."""
    found: list[Artifact] = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink() and not _SKIP.search(path.name):
            found.append({"path": path.relative_to(run_dir).as_posix(),
                          "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return found


def verify(run_dir: Path, record: RunRecord) -> list[str]:
    """Problems found re-hashing the run folder: missing, changed or unlisted files."""
    problems = []
    listed = {a["path"]: a for a in record["artifacts"]}
    present = {a["path"]: a for a in hash_artifacts(run_dir)}
    for path, art in listed.items():
        if path not in present:
            problems.append(f"{record['id']}: missing {path}")
        elif present[path]["sha256"] != art["sha256"]:
            problems.append(f"{record['id']}: changed {path} (sha256 {art['sha256'][:12]}… "
                            f"recorded, {present[path]['sha256'][:12]}… on disk)")
    for path in present:
        if path not in listed:
            problems.append(f"{record['id']}: unlisted {path}")
    return problems


def verify_runs(store: RunStore, run_ids: list[str] | None = None) -> list[str]:
    """Problems found re-hashing the given runs (all runs when none are given)."""
    problems: list[str] = []
    for run_id in run_ids or store.ids():
        try:
            record = store.read(run_id)
        except RecordError as exc:
            problems.append(f"{run_id}: {exc}")
            continue
        problems += verify(store.path(run_id), record)
    return problems
