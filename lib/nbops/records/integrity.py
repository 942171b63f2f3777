"""Integrity of run folders: every file but ``run.json`` is listed with its sha256.

``verify`` re-hashes a folder and names each missing, changed or unlisted file;
``verify_runs`` does it for finished runs and leaves a run still ``running`` unchecked (its
files are listed only when it ends).

Three rules make opening, running and saving a recorded notebook in JupyterLab harmless:

- the record keeps the executed notebook as ``.record/notebook.ipynb`` (hidden in
  JupyterLab); ``notebook.ipynb`` beside it is a working copy for people to open, not part
  of the record (records written before this kept ``notebook.ipynb`` itself, and it is
  still checked for them);

- ``.ipynb_checkpoints/`` folders (Jupyter's own housekeeping, written when a notebook is
  opened or saved) are never part of a record, at any depth;
- the executed notebook is hashed by what it records, not by its bytes:
  each cell's type, source and outputs (text, data, errors), empty cells left out. Opening
  and saving it changes its JSON layout and metadata but not that digest; changing a cell
  or an output does, and ``verify`` names it. (A notebook that is not valid JSON is hashed
  by its bytes.)
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NotRegularFileError, RecordError
from ..util.files import read_regular, sha256_file, walk_files
from .store import EVIDENCE_NOTEBOOK, NOTEBOOK_FILE, RunStore
from .types import Artifact, RunRecord

# Not listed: run.json itself (it holds the list) and the temp files of an atomic write in
# progress at the top of the run folder. Any other name at any depth is a file like others.
_SKIP = re.compile(r"^run\.json$|^\.[^/]+\.tmp$|(^|/)\.ipynb_checkpoints/")
NOTEBOOK = NOTEBOOK_FILE


def hash_artifacts(run_dir: Path) -> list[Artifact]:
    """Every file of the run folder but ``run.json``, at any depth, with sha256 and size;
    a symlink is listed as one (with its target), never followed. A FIFO, socket or device
    is never opened and not listed (``verify`` names it: see :func:`scan`)."""
    return scan(run_dir)[0]


def scan(run_dir: Path) -> tuple[list[Artifact], dict[str, str]]:
    """The run folder's files as :func:`hash_artifacts` lists them, and the paths that are
    not regular files (FIFOs, sockets, devices) with what they are; those are never
    opened, so a FIFO or a device cannot block a check."""
    found: list[Artifact] = []
    special: dict[str, str] = {}
    working_copy = _is_regular(run_dir / EVIDENCE_NOTEBOOK)  # then notebook.ipynb is not kept
    for rel, target in walk_files(run_dir):
        if _SKIP.search(rel) or (working_copy and rel == NOTEBOOK):
            continue
        if target is not None:
            digest = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()
            found.append({"path": rel, "sha256": digest, "bytes": 0, "symlink": target})
            continue
        path = run_dir / rel
        try:
            digest = (notebook_digest(path) if rel in (NOTEBOOK, EVIDENCE_NOTEBOOK)
                      else sha256_file(path, follow=False))
            size = os.lstat(path).st_size
        except NotRegularFileError as exc:
            special[rel] = exc.kind
            continue
        except FileNotFoundError:  # removed while walking: missing, as verify says
            continue
        found.append({"path": rel, "sha256": digest, "bytes": size})
    return found, special


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def notebook_digest(path: Path) -> str:
    """sha256 of what a notebook records (cells' type, source, outputs), see module doc.

    Raises:
        NotRegularFileError: ``path`` is not a regular file (never opened).
    """
    import json

    data = read_regular(path, follow=False)
    try:
        notebook = json.loads(data.decode("utf-8"))
        cells = [_cell(c) for c in notebook["cells"]]
        # an empty cell records nothing (JupyterLab adds one on a click below the last cell)
        cells = [c for c in cells if str(c["source"]).strip() or c["outputs"]]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return hashlib.sha256(data).hexdigest()
    text = json.dumps(cells, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _joined(value: object) -> object:
    return "".join(value) if isinstance(value, list) else value


def _cell(cell: dict[str, object]) -> dict[str, object]:
    outputs = []
    for output in cell.get("outputs") or []:  # type: ignore[attr-defined]
        kept = {k: _joined(output[k]) for k in ("output_type", "name", "text", "ename",
                                                "evalue", "traceback") if k in output}
        if "data" in output:
            kept["data"] = {mime: _joined(v) for mime, v in output["data"].items()}
        outputs.append(kept)
    return {"type": cell.get("cell_type"), "source": _joined(cell.get("source", "")),
            "outputs": outputs}


def verify(run_dir: Path, record: RunRecord) -> list[str]:
    """Problems found re-hashing the run folder: missing, changed or unlisted files,
    symlinks where the record has none, and files that are not regular files (a FIFO, a
    socket, a device: named, never opened)."""
    problems = []
    listed = {a["path"]: a for a in record["artifacts"]}
    files, special = scan(run_dir)
    present = {a["path"]: a for a in files}
    for path, art in listed.items():
        now = present.get(path)
        if path in special:
            problems.append(f"{record['id']}: changed {path} (now not a regular file: "
                            f"{special[path]})")
        elif now is None:
            problems.append(f"{record['id']}: missing {path}")
        elif "symlink" in now and now.get("symlink") != art.get("symlink"):
            problems.append(f"{record['id']}: changed {path} (now a symlink to "
                            f"{now['symlink']})")
        elif now["sha256"] != art["sha256"] and not (
                path == NOTEBOOK and sha256_file(run_dir / path, follow=False)
                == art["sha256"]):
            # (records written before notebooks were hashed by content hold its bytes' hash)
            problems.append(f"{record['id']}: changed {path} (sha256 {art['sha256'][:12]}… "
                            f"recorded, {now['sha256'][:12]}… on disk)")
    for path, now in present.items():
        if path not in listed:
            link = f" (a symlink to {now['symlink']})" if "symlink" in now else ""
            problems.append(f"{record['id']}: unlisted {path}{link}")
    for path, kind in special.items():
        if path not in listed:
            problems.append(f"{record['id']}: unlisted {path} (not a regular file: {kind})")
    return problems


@dataclass
class Verification:
    """What ``verify_runs`` found: ``problems`` (one line each) and the ids of the runs
    still ``running`` (their files change until they end: not checked)."""

    problems: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)


def verify_runs(store: RunStore, run_ids: list[str] | None = None,
                prepare: Callable[[RunRecord], RunRecord] | None = None) -> Verification:
    """Re-hash the given runs (all runs when none are given). ``prepare`` sees each record
    first (the caller reconciles records whose runner died); a record still ``running``
    after it is listed in ``running`` and checked no further."""
    found = Verification()
    for run_id in run_ids or store.ids():
        try:
            record = store.read(run_id)
            if prepare is not None:
                record = prepare(record)
        except RecordError as exc:
            found.problems.append(f"{run_id}: {exc}")
            continue
        if record["status"] == "running":
            found.running.append(run_id)
            continue
        found.problems += verify(store.path(run_id), record)
    return found
