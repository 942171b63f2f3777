"""Integrity of run folders: every file but ``run.json`` is listed with its sha256.

``verify`` re-hashes a folder and names each missing, changed or unlisted file.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import RecordError
from ..util.files import sha256_file, walk_files
from .store import RunStore
from .types import Artifact, RunRecord

# Not listed: run.json itself (it holds the list) and the temp files of an atomic write in
# progress at the top of the run folder. Any other name at any depth is a file like others.
_SKIP = re.compile(r"^run\.json$|^\.[^/]+\.tmp$")


def hash_artifacts(run_dir: Path) -> list[Artifact]:
    """Every file of the run folder but ``run.json``, at any depth, with sha256 and size;
    a symlink is listed as one (with its target), never followed."""
    found: list[Artifact] = []
    for rel, target in walk_files(run_dir):
        if _SKIP.search(rel):
            continue
        if target is not None:
            digest = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()
            found.append({"path": rel, "sha256": digest, "bytes": 0, "symlink": target})
        else:
            path = run_dir / rel
            found.append({"path": rel, "sha256": sha256_file(path),
                          "bytes": path.stat().st_size})
    return found


def verify(run_dir: Path, record: RunRecord) -> list[str]:
    """Problems found re-hashing the run folder: missing, changed or unlisted files, and
    symlinks where the record has none."""
    problems = []
    listed = {a["path"]: a for a in record["artifacts"]}
    present = {a["path"]: a for a in hash_artifacts(run_dir)}
    for path, art in listed.items():
        now = present.get(path)
        if now is None:
            problems.append(f"{record['id']}: missing {path}")
        elif "symlink" in now and now.get("symlink") != art.get("symlink"):
            problems.append(f"{record['id']}: changed {path} (now a symlink to "
                            f"{now['symlink']})")
        elif now["sha256"] != art["sha256"]:
            problems.append(f"{record['id']}: changed {path} (sha256 {art['sha256'][:12]}… "
                            f"recorded, {now['sha256'][:12]}… on disk)")
    for path, now in present.items():
        if path not in listed:
            link = f" (a symlink to {now['symlink']})" if "symlink" in now else ""
            problems.append(f"{record['id']}: unlisted {path}{link}")
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
