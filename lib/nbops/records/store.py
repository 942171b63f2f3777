"""The run store: ``runs/<run_id>/`` with ``run.json``, the executed notebook and artifacts.

``run.json`` is the source of truth. It is written atomically, validated against
``schemas/run.v1.json`` on every write and read, and lists every other file of the run
folder with its sha256, so that ``nbops runs verify`` can prove nothing changed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from ..errors import RecordError, RunNotFoundError, did_you_mean
from ..util.envvars import resolve_runs_dir
from ..util.files import atomic_write_json, decode_json
from .schema import RUN_SCHEMA, load_document, validate
from .types import RunRecord

__all__ = ["RunStore", "new_run_id", "read_events", "resolve_runs_dir", "utcnow",
           "validate_run"]

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
NOTEBOOK_FILE = "notebook.ipynb"  # the working copy people open (not part of the record)
EVIDENCE_NOTEBOOK = ".record/notebook.ipynb"  # the executed notebook as recorded
KERNEL_LOG = "kernel.log"


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id(stage: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9]+", "-", stage).strip("-")[:40] or "run"
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


def validate_run(record: RunRecord | dict[str, Any], shallow: bool = False) -> None:
    """Raises RecordError naming the first schema violation of a run record."""
    validate(record, RUN_SCHEMA, shallow)


class RunStore:
    """The folder of run records."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def at(cls, runs_dir: str | Path | None = None) -> RunStore:
        """The store at ``runs_dir`` (or ``$NBOPS_RUNS_DIR``, or ``./runs``)."""
        return cls(resolve_runs_dir(runs_dir))

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, record: RunRecord) -> Path:
        """Make the run folder (must not exist) and write the first ``run.json``."""
        folder = self.path(record["id"])
        folder.mkdir(parents=True, exist_ok=False)
        self.write(record)
        return folder

    def write(self, record: RunRecord) -> None:
        validate_run(record)
        atomic_write_json(self.path(record["id"]) / RUN_FILE, record)

    def read(self, run_id: str, full: bool = True) -> RunRecord:
        """The validated record of ``run_id`` (``full=False``: only its top level is
        checked, for listings; ``show`` and ``verify`` read in full).

        Raises:
            RunNotFoundError: no such run (with the closest id).
            RecordError: unreadable or invalid record.
        """
        if "/" in run_id or run_id in ("", ".", ".."):
            raise RunNotFoundError(f"invalid run id {run_id!r}")
        file = self.path(run_id) / RUN_FILE
        try:
            record = load_document(file, RUN_SCHEMA, shallow=not full)
        except FileNotFoundError:
            if os.path.lexists(file):
                raise RecordError(f"{file} is unreadable: a symlink to a missing file "
                                  f"({os.readlink(file)})") from None
            hint = did_you_mean(run_id, self.ids())
            raise RunNotFoundError(f"no run '{run_id}' in {self.root}.{hint} "
                                   "List runs with 'nbops runs ls'.") from None
        return _complete(record)

    def ids(self) -> list[str]:
        """Every folder holding a ``run.json`` of any kind: one that is a folder, a FIFO
        or a dangling symlink is a run whose record is unreadable (``read`` says so, and
        ``runs ls`` and ``runs verify`` name it), not a folder to ignore."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and os.path.lexists(p / RUN_FILE))


def _complete(record: dict[str, Any]) -> RunRecord:
    """Optional blocks a record written by an older nbops (or by hand) may lack."""
    for key, empty in (("logged_params", {}), ("models", {}), ("inputs", []),
                       ("warnings", []), ("tags", {}), ("pipeline", None)):
        record.setdefault(key, empty)
    record.setdefault("started_at_epoch", 0.0)
    record.setdefault("runner", {"pid": 0, "host": "", "proc_start": None, "kernel_pid": None,
                                 "kernel_start": None})
    record["runner"].setdefault("kernel_start", None)
    return cast(RunRecord, record)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Events the notebook recorded; a torn last line (kill mid-write) is ignored."""
    file = run_dir / EVENTS_FILE
    if not file.is_file():
        return []
    events = []
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(decode_json(json.loads(line)))
        except json.JSONDecodeError:
            continue
    return events
