"""Run records: ``runs/<run_id>/`` with ``run.json``, the executed notebook and artifacts.

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
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import RecordError, RunNotFoundError, did_you_mean
from .fsutil import atomic_write_json, decode_json, encode_json, sha256_file

SCHEMA = "nbops.run/1"
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
NOTEBOOK_FILE = "notebook.ipynb"
_SKIP = re.compile(r"^\..*\.tmp$|^run\.json$|\.lock$")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def resolve_runs_dir(option: str | Path | None = None) -> Path:
    """``--runs-dir``, else ``$NBOPS_RUNS_DIR``, else ``./runs``."""
    chosen = option or os.environ.get("NBOPS_RUNS_DIR") or "runs"
    return Path(chosen).expanduser().resolve()


def new_run_id(stage: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9]+", "-", stage).strip("-")[:40] or "run"
    return f"{stamp}-{safe}-{secrets.token_hex(3)}"


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads((Path(__file__).parent / "schemas" / "run.v1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def validate(record: dict[str, Any]) -> None:
    """Raises RecordError naming the first schema violation."""
    encoded = encode_json(record)
    if encoded.get("schema") not in (None, SCHEMA) and str(encoded.get("schema", "")).startswith(
            "nbops.run/"):
        raise RecordError(f"run record {encoded.get('id')} has schema {encoded['schema']}, newer "
                          "than this nbops understands: upgrade nbops (pip install -U nbops)")
    errors = sorted(_validator().iter_errors(encoded), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top)"
        raise RecordError(f"run record {record.get('id')} is invalid at {where}: {first.message}")


class RunStore:
    """The folder of run records."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, record: dict[str, Any]) -> Path:
        """Make the run folder (must not exist) and write the first ``run.json``."""
        folder = self.path(record["id"])
        folder.mkdir(parents=True, exist_ok=False)
        self.write(record)
        return folder

    def write(self, record: dict[str, Any]) -> None:
        validate(record)
        atomic_write_json(self.path(record["id"]) / RUN_FILE, record)

    def read(self, run_id: str) -> dict[str, Any]:
        """The validated record of ``run_id``.

        Raises:
            RunNotFoundError: no such run (with the closest id).
            RecordError: unreadable or invalid record.
        """
        if "/" in run_id or run_id in ("", ".", ".."):
            raise RunNotFoundError(f"invalid run id {run_id!r}")
        file = self.path(run_id) / RUN_FILE
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            hint = did_you_mean(run_id, self.ids())
            raise RunNotFoundError(f"no run '{run_id}' in {self.root}.{hint} "
                                   "List runs with 'nbops runs ls'.") from None
        try:
            record: dict[str, Any] = decode_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RecordError(f"run record {file} is not valid JSON: {exc}") from None
        validate(record)
        return record

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / RUN_FILE).is_file())


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


def fold_events(record: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Apply recorded events to the record: metrics, params, outputs, models."""
    history: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        kind = event.get("kind")
        if kind == "metric":
            history.setdefault(event["name"], []).append(
                {"step": event["step"], "value": event["value"], "timestamp": event["t"]})
        elif kind == "params":
            record.setdefault("logged_params", {}).update(event["params"])
        elif kind == "output":
            record["outputs"][event["name"]] = event["value"]
        elif kind == "model":
            record.setdefault("models", {})[event["name"]] = {
                "flavor": event["flavor"], "path": event["path"]}
    record["metric_history"] = history
    record["metrics"] = {name: values[-1]["value"] for name, values in history.items()}


def hash_artifacts(run_dir: Path) -> list[dict[str, Any]]:
    """Every file of the run folder but ``run.json``, with sha256 and size."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and not path.is_symlink() and not _SKIP.search(path.name):
            found.append({"path": path.relative_to(run_dir).as_posix(),
                          "sha256": sha256_file(path), "bytes": path.stat().st_size})
    return found


def verify(run_dir: Path, record: dict[str, Any]) -> list[str]:
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
