"""The promotion ledger: every alias move, proposal and approval, append-only, hash-chained.

One JSONL file per registered model under ``<runs>/ledger/<model>.jsonl``; one line per
event. Invariants:

- append-only: lines are only ever added (one ``write`` of a whole line, then ``fsync``);
  a line cut short by a crash (the last one, without its newline) is skipped on read and
  reported as ``torn``; the next append cuts it off (it never held a whole event);
- one writer at a time: :func:`locked` holds a file lock beside the ledger (re-entrant in a
  thread), and :func:`append` takes it, so a read-check-move-append sequence (compare-and-
  set on an alias) cannot interleave with another one in any process on this machine;
- tamper-evident: ``seq`` numbers events 1, 2, 3...; each line written by this version
  carries ``prev_sha256`` (sha256 of the previous line's exact bytes, newline included;
  null on a first line) and ``sha256`` (of its own JSON without that field, keys sorted).
  :func:`read` checks both on every read and lists each :class:`Break` (line number and
  kind); :func:`append` refuses to write after one (:func:`ensure_intact`);
- legacy: lines at the start without ``sha256`` were written before the chain existed;
  they are read (and counted in ``legacy``) but prove nothing. The first chained line
  after them also carries ``legacy_sha256``, the sha256 of every byte before it, so the
  legacy lines cannot change unnoticed from then on.

A chain detects edits made by someone who does not recompute it; whoever can write the
file can rewrite the whole chain (see ``audit``, which compares moves with MLflow's copy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from ..errors import PromotionBlocked
from ..util.envvars import current_runs_dir
from ..util.identity import current_user

Kind = Literal["move", "proposal", "approval"]
KINDS: tuple[Kind, ...] = ("move", "proposal", "approval")
BreakKind = Literal["edited", "deleted or swapped", "duplicate sequence", "not JSON",
                    "not an object", "not an entry", "unchained"]


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
    prev_sha256: NotRequired[str | None]  # the chain (absent on legacy lines)
    sha256: NotRequired[str]
    legacy_sha256: NotRequired[str]  # the first chained line after legacy ones


class Break(TypedDict):
    """Where the ledger stops proving itself: the 1-based line and what is wrong there."""

    line: int
    kind: BreakKind
    detail: str


class Ledger(TypedDict):
    entries: list[LedgerEntry]  # every line that is a well-formed entry, broken or not
    torn: bool  # the last line was cut short (a crash while writing it)
    legacy: int  # lines at the start written before the chain (no hashes)
    breaks: list[Break]



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


_held = threading.local()  # the lock files this thread holds, with a depth each


@contextlib.contextmanager
def locked(runs_dir: Path, model: str, purpose: Literal["ledger", "register"] = "ledger"
           ) -> Iterator[None]:
    """Hold the ledger's lock (one writer across processes; re-entrant in a thread);
    ``purpose="register"``: the model's registration lock instead (find-or-register a
    version), a separate file, so that a registration may move an alias (which takes the
    ledger's lock) while it holds it.
    """
    from filelock import FileLock

    target = path_of(runs_dir, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    name = str(target) + (".lock" if purpose == "ledger" else ".register.lock")
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(name):
        depth[name] += 1
        try:
            yield
        finally:
            depth[name] -= 1
        return
    with FileLock(name, timeout=60):
        depth[name] = 1
        try:
            yield
        finally:
            depth[name] = 0


def read(runs_dir: Path, model: str) -> Ledger:
    """Every well-formed entry, and every break of the chain (see the module's invariants).
    """
    target = path_of(runs_dir, model)
    if not target.is_file():
        return {"entries": [], "torn": False, "legacy": 0, "breaks": []}
    data = target.read_bytes()
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    state = _Verifier()
    for number, raw in enumerate(lines, 1):
        state.check(number, raw)
    return {"entries": state.entries, "torn": not data.endswith(b"\n") and bool(data),
            "legacy": state.legacy, "breaks": state.breaks}


def ensure_intact(runs_dir: Path, model: str) -> Ledger:
    """The ledger, when it has no break.

    Raises:
        PromotionBlocked: a break, named by line and kind, with what to do.
    """
    ledger = read(runs_dir, model)
    if ledger["breaks"]:
        first = ledger["breaks"][0]
        more = len(ledger["breaks"]) - 1
        raise PromotionBlocked(
            f"the ledger {path_of(runs_dir, model)} is broken at line {first['line']} "
            f"({first['kind']}: {first['detail']})" + (f" and {more} more" if more else "")
            + "; nothing is recorded after a break. See nbops models history "
            f"{model}; restore the file from a backup, or move it aside (it stays as "
            "evidence) to start a new ledger")
    return ledger


def append(runs_dir: Path, model: str, kind: Kind, alias: str, version: int, *,
           previous: int | None = None, reason: str = "", evidence: list[str] | None = None,
           who: str | None = None) -> LedgerEntry:
    """Append one event, chained to the last line (takes :func:`locked`; call it inside
    :func:`locked` too when the event depends on what was read).

    Raises:
        PromotionBlocked: the ledger is broken (:func:`ensure_intact`).
        UsageError: ``who`` (or ``$NBOPS_USER``) is not a usable name.
    """
    actor = current_user(who)
    target = path_of(runs_dir, model)
    with locked(runs_dir, model):
        ensure_intact(runs_dir, model)
        data = target.read_bytes() if target.is_file() else b""
        if data and not data.endswith(b"\n"):  # a torn last line: never a whole event
            data = data[:data.rfind(b"\n") + 1]
            os.truncate(target, len(data))
        lines = data.split(b"\n")[:-1]
        last = json.loads(lines[-1]) if lines else None
        entry: LedgerEntry = {
            "seq": (last["seq"] + 1) if last else 1,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "kind": kind,
            "model": model, "alias": alias, "version": version, "previous": previous,
            "who": actor, "reason": reason, "evidence": list(evidence or []),
            "prev_sha256": _sha(lines[-1] + b"\n") if lines else None}
        if last is not None and "sha256" not in last:  # the chain starts after legacy lines
            entry["legacy_sha256"] = _sha(data)
        entry["sha256"] = _self_hash(dict(entry))
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    return entry


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _self_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return _sha(json.dumps(body, sort_keys=True).encode())


_FIELDS: dict[str, tuple[type, ...]] = {
    "at": (str,), "model": (str,), "alias": (str,), "who": (str,), "reason": (str,),
    "evidence": (list,), "seq": (int,), "version": (int,), "previous": (int, type(None))}


def _malformed(entry: dict[str, Any]) -> str | None:
    """What makes ``entry`` no ledger entry (a missing or ill-typed field), or None."""
    for field, types in _FIELDS.items():
        value = entry.get(field, ...)
        if type(value) not in types:
            return f"field {field!r} is {'missing' if value is ... else repr(value)[:40]}"
    if entry.get("kind") not in KINDS:
        return f"kind {entry.get('kind')!r:.40} is none of {', '.join(KINDS)}"
    if any(type(item) is not str for item in entry["evidence"]):
        return "evidence holds something other than run ids"
    return None


class _Verifier:
    """Checks lines in order against the last well-formed one (the reference), so that one
    inserted, deleted or edited line is reported once, not again on its neighbour."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []
        self.breaks: list[Break] = []
        self.legacy = 0
        self.seen = hashlib.sha256()  # of every byte before the current line
        self.lines_seen = 0
        self.ref: tuple[bytes, int] | None = None  # the reference line and its seq
        self.ref_edited = False
        self.seqs: set[int] = set()
        self.chained = False

    def check(self, number: int, raw: bytes) -> None:
        try:
            self._check(number, raw)
        finally:
            self.seen.update(raw)
            self.lines_seen += 1

    def _check(self, number: int, raw: bytes) -> None:
        try:
            found = json.loads(raw)
        except (ValueError, RecursionError):
            self._break(number, "not JSON", "the line does not parse")
            return
        if not isinstance(found, dict):
            self._break(number, "not an object", f"a JSON {type(found).__name__}")
            return
        problem = _malformed(found)
        if problem:
            self._break(number, "not an entry", problem)
            return
        entry: LedgerEntry = found  # type: ignore[assignment]
        self.entries.append(entry)
        kind, detail = self._link(entry, raw)
        edited = kind == "edited"
        self.ref, self.ref_edited = (raw, entry["seq"]), edited
        if kind is not None:
            self._break(number, kind, detail)

    def _link(self, entry: LedgerEntry, raw: bytes) -> tuple[BreakKind | None, str]:
        """The break between the reference line and ``entry`` (None: they chain)."""
        expected = self.ref[1] + 1 if self.ref else 1
        first = "sha256" in entry and not self.chained
        self.chained = self.chained or "sha256" in entry
        if entry["seq"] in self.seqs:
            return "duplicate sequence", f"seq {entry['seq']} again"
        self.seqs.add(entry["seq"])
        if entry["seq"] != expected:
            return "deleted or swapped", f"seq {entry['seq']} where {expected} was due"
        if "sha256" not in entry:
            if self.chained:
                return "unchained", "no hash after the chain began (inserted or edited)"
            self.legacy += 1
            return None, ""
        if entry["sha256"] != _self_hash(dict(entry)):
            return "edited", "its content does not match its sha256"
        if (first and self.lines_seen
                and entry.get("legacy_sha256") != self.seen.copy().hexdigest()):
            return "edited", "the legacy lines before it changed (legacy_sha256)"
        want = _sha(self.ref[0]) if self.ref else None
        if entry.get("prev_sha256") != want and not self.ref_edited:
            return "edited", "the line before it changed since it was written"
        return None, ""

    def _break(self, number: int, kind: BreakKind, detail: str) -> None:
        self.breaks.append({"line": number, "kind": kind, "detail": detail})
