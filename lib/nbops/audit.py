"""The audit trail of a model version: from data hashes to the traffic it served.

:func:`trail` gathers, for one registered version, what the records already hold and says
nothing they do not: the data its training and evaluation read (each file's recorded sha256,
re-hashed now: ``ok``, ``changed`` or ``missing``, and the run that produced it), every run
in its lineage (prepare, train, evaluate, register: status, template hash, parameters, git
commit, who launched it and why), the ledger's proposals, approvals and alias moves for
the version, the loop cycles that retrained it or tried it as a challenger, and the
prediction log's rows it answered. Plain data: the CLI formats it.

A file inside a run of this runs folder (and the model folder) is read there, wherever the
record says it was written (``records.relocate``): a copied or moved project audits its own
copy, never the original's files.

Invariant: nothing here writes; a record, ledger or log that is missing or unreadable is
reported as such in the trail (an audit of partial evidence says so), never an error,
except an unknown model or version (a usage error).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, TypedDict

from .errors import NbopsError, RegistryNotFound
from .loop.trial import describe as describe_trial
from .promotion.service import where
from .records.cycles import CycleStore
from .records.queries import get_record
from .records.relocate import rebase
from .records.types import CycleRecord, Origin, RunRecord
from .serving.predlog import LogEntry, entries, log_folder
from .tracking import ledger, registry
from .util.files import sha256_file

Role = Literal["prepare", "train", "evaluate", "register", "upstream"]
DataState = Literal["ok", "changed", "missing"]
_RUN_ID = re.compile(r"^\d{8}T\d{6}-[\w.-]+$")


class DataFile(TypedDict):
    """A file a lineage run read, as its record hashed it, checked again now."""

    parameter: str
    path: str
    sha256: str
    read_by: str  # the run (id) that read it
    produced_by: str | None  # the run whose folder it is in, when it is a run's artifact
    state: DataState


class AuditRun(TypedDict):
    role: Role
    id: str
    found: bool  # False: not in this runs folder (the fields below are empty)
    status: str
    started_at: str
    template: str | None  # name@sha256[:12]
    parameters: dict[str, Any]
    git_commit: str | None
    origin: Origin | None
    pipeline_run: str | None


class AuditEvent(TypedDict):
    at: str
    kind: str  # proposal, approval, move
    alias: str
    previous: int | None
    who: str
    reason: str
    evidence: list[str]


class Traffic(TypedDict):
    rows: int
    requests: int
    failed_requests: int
    by_variant: dict[str, int]
    first: str | None
    last: str | None


class AuditCycle(TypedDict):
    """A loop cycle that made the version (``retrain``) or tried it (``trial``)."""

    id: str
    started_at: str
    role: Literal["retrain", "trial"]
    status: str  # the cycle's
    why: str  # the cycle's decision: action and reason
    detail: str  # what it did with the version


class LedgerCheck(TypedDict):
    """The ledger's own check (hash chain) and its comparison with MLflow's copies."""

    legacy: int  # lines written before the chain: read, not verifiable
    breaks: list[str]  # each break of the chain: line, kind, detail
    mlflow: list[str]  # each move the ledger and MLflow's tags disagree about


class AuditTrail(TypedDict):
    model: str
    version: int
    aliases: list[str]
    model_path: str | None
    verdict: str | None
    metrics: dict[str, Any]
    runs: list[AuditRun]
    data: list[DataFile]
    events: list[AuditEvent]
    cycles: list[AuditCycle]
    traffic: Traffic
    ledger: LedgerCheck


def trail(model: str, version: int | None = None, runs_dir: str | Path | None = None,
          tracking_uri: str | None = None) -> AuditTrail:
    """The audit trail of ``model`` at ``version`` (default: the champion's, else the
    newest).

    Raises:
        RegistryNotFound: no such model or version.
    """
    place = where(runs_dir, tracking_uri)
    chosen = _pick(model, version, place["tracking_uri"])
    tags = chosen["tags"]
    runs_root = place["runs_dir"]
    lineage: list[tuple[Role, str | None]] = [
        ("train", tags.get("nbops.train_run")), ("evaluate", tags.get("nbops.evaluate_run")),
        ("register", tags.get("nbops.register_run"))]
    records: dict[str, RunRecord] = {}
    runs: list[AuditRun] = []
    for role, run_id in lineage:
        if run_id:
            runs.append(_run(role, run_id, runs_root, records))
    data = _data(records, runs_root)
    for producer in dict.fromkeys(d["produced_by"] for d in data if d["produced_by"]):
        if producer not in records:
            record_role: Role = "prepare" if _stage_of(producer) == "prepare" else "upstream"
            runs.insert(0, _run(record_role, producer, runs_root, records))
    evaluate = records.get(tags.get("nbops.evaluate_run", ""))
    return {
        "model": model, "version": chosen["version"], "aliases": chosen["aliases"],
        "model_path": rebase(tags.get("nbops.model_path"), runs_root),
        "verdict": (evaluate["outputs"].get("verdict") if evaluate else None),
        "metrics": dict(evaluate["metrics"]) if evaluate else {},
        "runs": runs, "data": data,
        "events": _events(place["ledger_dir"], model, chosen["version"]),
        "cycles": _cycles(runs_root, model, chosen["version"]),
        "traffic": traffic(log_folder(runs_root, model), chosen["version"]),
        "ledger": check_ledger(model, chosen, place["ledger_dir"], place["tracking_uri"]),
    }


def check_ledger(model: str, chosen: registry.ModelVersion, ledger_dir: Path,
                 uri: str) -> LedgerCheck:
    """The chain's breaks, and the moves MLflow's tags hold that the ledger does not: the
    version's ``nbops.promotion.<alias>`` (its last move to that alias, whole) and each
    alias's ``nbops.alias_history.<alias>`` (the last 50 moves: version, previous, time).
    A history one move short at the end is a crash between the two writes, not a mismatch.
    """
    state = ledger.read(ledger_dir, model)
    moves = [e for e in state["entries"] if e["kind"] == "move"]
    found: list[str] = []
    for tag, raw in sorted(chosen["tags"].items()):
        if tag.startswith(registry.PROMOTION_TAG):
            alias = tag.removeprefix(registry.PROMOTION_TAG)
            found += _copy_differs(alias, raw, [m for m in moves if m["alias"] == alias])
    for alias in sorted({m["alias"] for m in moves}):
        ours = [(m["version"], m["previous"], m["at"]) for m in moves if m["alias"] == alias]
        theirs = [(c.get("version"), c.get("previous"), c.get("at"))
                  for c in registry.alias_history(model, alias, uri)]
        if theirs and theirs not in (ours[-len(theirs):], ours[-len(theirs) - 1:-1]):
            found.append(f"{alias}: the ledger's moves differ from MLflow's alias history "
                         f"({len(ours)} in the ledger, {len(theirs)} in MLflow's last)")
    return {"legacy": state["legacy"], "mlflow": found,
            "breaks": [f"line {b['line']}: {b['kind']} ({b['detail']})"
                       for b in state["breaks"]]}


def _copy_differs(alias: str, raw: str, moves: list[ledger.LedgerEntry]) -> list[str]:
    try:
        copy = json.loads(raw)
    except ValueError:
        return [f"{alias}: MLflow's copy of the move is not JSON"]
    if not isinstance(copy, dict):
        return [f"{alias}: MLflow's copy of the move is not an object"]
    same = [m for m in moves if m["seq"] == copy.get("seq")]
    fields = ("at", "who", "version", "previous", "reason", "evidence")
    if same and all(same[0].get(f) == copy.get(f) for f in fields):
        return []
    return [f"{alias}: MLflow holds a move to v{copy.get('version')} by {copy.get('who')!r} "
            f"at {copy.get('at')} (seq {copy.get('seq')}) that the ledger "
            + ("records otherwise" if same else "does not hold")]


def _cycles(runs_root: Path, model: str, version: int) -> list[AuditCycle]:
    """The loop cycles whose retrain registered ``version`` or that tried it."""
    found: list[AuditCycle] = []
    for cycle in CycleStore(runs_root).all():
        if cycle["model"] != model:
            continue
        decision = cycle["decision"]
        why = (f"{decision['action']}: {decision['reason']}" if decision else "-")
        outcome, trial = cycle["outcome"], cycle.get("trial")
        if outcome and outcome["version"] == version:
            data = cycle.get("data")
            fresh = (f" on {data['base_rows']} base + {data['window_rows']} labelled rows "
                     f"(sha256 {data['sha256'][:16]})" if data else "")
            found.append(_entry(cycle, "retrain", why,
                                f"registered by pipeline {cycle['pipeline_run']}{fresh}"))
        if trial and trial["version"] == version and not (
                trial["opened_by"] == cycle["id"] and trial["status"] == "open"):
            run = f" (A/B run {trial['ab_run']})" if trial["ab_run"] else ""
            found.append(_entry(cycle, "trial", why, describe_trial(trial, cycle["id"]) + run))
    return found


def _entry(cycle: CycleRecord, role: Literal["retrain", "trial"], why: str,
           detail: str) -> AuditCycle:
    return {"id": cycle["id"], "started_at": cycle["started_at"], "role": role,
            "status": cycle["status"], "why": why, "detail": detail}


def _pick(model: str, version: int | None, uri: str) -> registry.ModelVersion:
    if version is not None:
        return registry.get_version(model, version, uri)
    champion = registry.version_by_alias(model, "champion", uri)
    if champion is not None:
        return champion
    versions = registry.list_versions(model, uri)
    if not versions:
        raise RegistryNotFound(f"no registered model {model!r} (see: nbops models ls)")
    return max(versions, key=lambda v: v["version"])


def _stage_of(run_id: str) -> str:
    """The stage in a run id (``<stamp>-<stage>-<suffix>``)."""
    parts = run_id.split("-")
    return "-".join(parts[1:-1]) if len(parts) >= 3 else ""


def _run(role: Role, run_id: str, runs_root: Path, records: dict[str, RunRecord]) -> AuditRun:
    try:
        record = get_record(run_id, runs_root)
    except NbopsError:
        return {"role": role, "id": run_id, "found": False, "status": "", "started_at": "",
                "template": None, "parameters": {}, "git_commit": None, "origin": None,
                "pipeline_run": None}
    records[run_id] = record
    template = record["template"]
    return {
        "role": role, "id": run_id, "found": True, "status": record["status"],
        "started_at": record["started_at"],
        "template": f"{template['name']}@{template['sha256'][:12]}" if template else None,
        "parameters": record["parameters"],
        "git_commit": record["environment"]["git"]["commit"],
        "origin": record.get("origin"),
        "pipeline_run": record["pipeline"]["run_id"] if record["pipeline"] else None,
    }


def _data(records: dict[str, RunRecord], runs_root: Path) -> list[DataFile]:
    """Every file the lineage runs read, once per (path, hash), checked again now."""
    seen: set[tuple[str, str]] = set()
    found: list[DataFile] = []
    for run_id, record in records.items():
        for item in record["inputs"]:
            if (item["path"], item["sha256"]) in seen:
                continue
            seen.add((item["path"], item["sha256"]))
            path = str(rebase(item["path"], runs_root))  # a copied project: the copy's file
            found.append({"parameter": item["parameter"], "path": path,
                          "sha256": item["sha256"], "read_by": run_id,
                          "produced_by": _producer(Path(path), runs_root),
                          "state": _state(Path(path), item["sha256"])})
    return found


def _producer(path: Path, runs_root: Path) -> str | None:
    """The run whose folder holds ``path`` (an artifact of an earlier stage), if any."""
    try:
        first = path.resolve().relative_to(runs_root.resolve()).parts[0]
    except (ValueError, IndexError, OSError):
        return None
    return first if _RUN_ID.match(first) else None


def _state(path: Path, sha256: str) -> DataState:
    try:
        return "ok" if sha256_file(path) == sha256 else "changed"
    except OSError:
        return "missing"


def _events(ledger_dir: Path, model: str, version: int) -> list[AuditEvent]:
    """The ledger's well-formed entries for this version (a torn last line is left out by
    the reader; breaks are reported by :func:`check_ledger`)."""
    try:
        entries = ledger.read(ledger_dir, model)["entries"]
    except NbopsError:
        return []
    return [{"at": e["at"], "kind": e["kind"], "alias": e["alias"], "previous": e["previous"],
             "who": e["who"], "reason": e["reason"], "evidence": e["evidence"]}
            for e in entries if e["version"] == version]


def traffic(folder: Path, version: int) -> Traffic:
    """What the prediction log says this version answered: rows, requests (failed ones
    apart), rows per variant, first and last time. Lines still being written are skipped."""
    counts: Traffic = {"rows": 0, "requests": 0, "failed_requests": 0, "by_variant": {},
                       "first": None, "last": None}
    requests: set[str] = set()
    for entry in entries(folder):
        _count(counts, requests, entry, version)
    counts["requests"] = len(requests)
    return counts


def _count(counts: Traffic, requests: set[str], entry: LogEntry, version: int) -> None:
    if entry.get("version") != version:
        return
    if "error" in entry:
        counts["failed_requests"] += 1
        return
    counts["rows"] += 1
    requests.add(str(entry.get("request_id")))
    variant = str(entry.get("variant"))
    counts["by_variant"][variant] = counts["by_variant"].get(variant, 0) + 1
    at = str(entry.get("time"))
    if counts["first"] is None or at < counts["first"]:
        counts["first"] = at
    if counts["last"] is None or at > counts["last"]:
        counts["last"] = at
