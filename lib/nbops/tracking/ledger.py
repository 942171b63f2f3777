"""The promotion ledger: every alias move, proposal and approval, append-only.

One JSONL file per registered model under ``<runs>/ledger/<model>.jsonl``; one line per
event. Invariants:

- append-only: lines are only ever added (one ``write`` of a whole line, then ``fsync``);
  a line cut short by a crash is ignored on read and reported by :func:`read` as
  ``torn`` (the next append starts a fresh line after it, so nothing else is lost);
- one writer at a time: :func:`locked` holds a file lock beside the ledger, so a
  read-check-move-append sequence (compare-and-set on an alias) cannot interleave with
  another one in any process on this machine;
- ``seq`` numbers events 1, 2, 3... per model, so a gap or a repeat shows tampering.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, TypedDict

from ..util.envvars import USER, current_runs_dir

Kind = Literal["move", "proposal", "approval"]


class LedgerEntry(TypedDict):
    seq: int
    at: str
    kind: Kind
    model: str
    alias: str
    version: int
    previous: int | None  # moves: the version the alias held before (None: it was unset)
    who: str
    reason: str
    evidence: list[str]  # run ids that justify it (evaluate, A/B), or the approved proposal's


class Ledger(TypedDict):
    entries: list[LedgerEntry]
    torn: bool  # the last line was cut short (a crash while writing it)


def folder(runs_dir: Path) -> Path:
    return runs_dir / "ledger"


def path_of(runs_dir: Path, model: str) -> Path:
    safe = re.sub(r"[^\w.-]", "_", model) or "model"
    return folder(runs_dir) / f"{safe}.jsonl"


def home(tracking_uri: str) -> Path:
    """The folder whose ledger goes with the registry at ``tracking_uri``: beside an
    embedded SQLite store (the runs folder), else the run's runs folder (inside a kernel),
    else ``$NBOPS_RUNS_DIR`` / ``./runs``."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).parent
    return current_runs_dir()


def current_user() -> str:
    """Who is acting: ``$NBOPS_USER``, else the login name."""
    try:
        return os.environ.get(USER) or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextlib.contextmanager
def locked(runs_dir: Path, model: str, purpose: Literal["ledger", "register"] = "ledger"
           ) -> Iterator[None]:
    """Hold the ledger's lock (one writer across processes); ``purpose="register"``: the
    model's registration lock instead (find-or-register a version), a separate file, so
    that a registration may move an alias (which takes the ledger's lock) while it holds it.
    """
    from filelock import FileLock

    target = path_of(runs_dir, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".lock" if purpose == "ledger" else ".register.lock"
    with FileLock(str(target) + suffix, timeout=60):
        yield


def read(runs_dir: Path, model: str) -> Ledger:
    target = path_of(runs_dir, model)
    if not target.is_file():
        return {"entries": [], "torn": False}
    entries: list[LedgerEntry] = []
    torn = False
    with target.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                if not line.endswith("\n"):
                    raise ValueError("line cut short")
                entries.append(json.loads(line))
            except ValueError:  # a torn write: skipped, and said
                torn = True
    return {"entries": entries, "torn": torn}


def append(runs_dir: Path, model: str, kind: Kind, alias: str, version: int, *,
           previous: int | None = None, reason: str = "", evidence: list[str] | None = None,
           who: str | None = None) -> LedgerEntry:
    """Append one event (call inside :func:`locked` when it depends on what was read)."""
    target = path_of(runs_dir, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    ledger = read(runs_dir, model)
    if ledger["torn"]:  # end the torn line so the new one starts on its own
        with target.open("ab") as handle:
            handle.write(b"\n")
    seq = (ledger["entries"][-1]["seq"] + 1) if ledger["entries"] else 1
    entry: LedgerEntry = {"seq": seq, "at": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "kind": kind, "model": model, "alias": alias, "version": version,
        "previous": previous, "who": who or current_user(), "reason": reason,
        "evidence": list(evidence or [])}
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry
