"""A run record's life: created ``running``, events folded in, finalized once.

Invariant: a record on disk is always valid; it is ``running`` only while its runner lives
(see ``reconcile``), and ``finalize`` is the only way to an end state, which it writes
together with the hash of every file in the run folder.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..util import envvars
from ..util.environment import capture
from ..util.files import atomic_write_bytes, sha256_file
from ..util.identity import current_user
from ..util.process import process_start_time
from .integrity import hash_artifacts
from .schema import RUN_SCHEMA
from .store import (
    EVIDENCE_NOTEBOOK,
    NOTEBOOK_FILE,
    RunStore,
    new_run_id,
    read_events,
    utcnow,
)
from .types import (
    TRIGGERS,
    InputHash,
    MetricPoint,
    Origin,
    RunError,
    RunRecord,
    Status,
    TemplateRef,
    Trigger,
)


def new_record(stage: str, cwd: Path, *, template: TemplateRef | None,
               parameters: dict[str, Any], origin: Origin | None = None) -> RunRecord:
    """A fresh ``running`` record for this process (``origin``: who and why; by default
    :func:`make_origin`'s)."""
    return {
        "schema": RUN_SCHEMA, "id": new_run_id(stage), "stage": stage,
        "template": template, "parameters": parameters, "status": "running",
        "started_at": utcnow(), "started_at_epoch": time.time(), "ended_at": None,
        "duration_s": None, "metrics": {}, "metric_history": {}, "logged_params": {},
        "outputs": {}, "artifacts": [], "models": {}, "inputs": input_hashes(parameters, cwd),
        "warnings": [], "environment": capture(cwd), "error": None, "mlflow": None,
        "runner": {"pid": os.getpid(), "host": socket.gethostname(),
                   "proc_start": process_start_time(os.getpid()), "kernel_pid": None,
                   "kernel_start": None},
        "tags": {}, "pipeline": None, "origin": origin or make_origin(),
    }


def make_origin(default: Trigger = "api", *, cycle: str | None = None,
                trigger: Trigger | None = None) -> Origin:
    """Who runs this process's runs and why: ``trigger`` when the caller knows (a loop
    tick), else ``$NBOPS_TRIGGER`` when it names a trigger (a cron line sets ``schedule``),
    else ``default`` (``cli`` from the command line, ``api`` from Python); the cycle from
    the argument or ``$NBOPS_CYCLE``."""
    from_env = os.environ.get(envvars.TRIGGER, "")
    chosen: Trigger = (trigger if trigger is not None
                       else next((t for t in TRIGGERS if t == from_env), default))
    return {"user": current_user(), "host": socket.gethostname(), "trigger": chosen,
            "cycle": cycle or os.environ.get(envvars.CYCLE) or None}


def input_hashes(parameters: Mapping[str, Any], cwd: Path) -> list[InputHash]:
    """sha256 of every parameter value that names an existing file (input data)."""
    found: list[InputHash] = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(name, item)
        elif isinstance(value, str) and 0 < len(value) < 4096 and "\x00" not in value:
            try:
                path = Path(value) if Path(value).is_absolute() else cwd / value
                if path.is_file():
                    found.append({"parameter": name, "path": str(path),
                                  "sha256": sha256_file(path)})
            except OSError:
                pass

    for name, value in parameters.items():
        visit(name, value)
    return found


def fold_events(record: RunRecord, events: list[dict[str, Any]]) -> None:
    """Apply recorded events to the record: metrics, params, outputs, models."""
    history: dict[str, list[MetricPoint]] = {}
    for event in events:
        kind = event.get("kind")
        if kind == "metric":
            history.setdefault(event["name"], []).append(
                {"step": event["step"], "value": event["value"], "timestamp": event["t"]})
        elif kind == "params":
            record["logged_params"].update(event["params"])
        elif kind == "output":
            record["outputs"][event["name"]] = event["value"]
        elif kind == "model":
            record["models"][event["name"]] = {"flavor": event["flavor"], "path": event["path"]}
    record["metric_history"] = history
    record["metrics"] = {name: values[-1]["value"] for name, values in history.items()}


def keep_evidence(run_dir: Path) -> None:
    """The executed notebook as the record keeps it (``.record/notebook.ipynb``, hidden in
    JupyterLab), apart from the working copy people open (``notebook.ipynb``): opening,
    running or saving that copy never changes what the record holds."""
    notebook = run_dir / NOTEBOOK_FILE
    if notebook.is_file():
        atomic_write_bytes(run_dir / EVIDENCE_NOTEBOOK, notebook.read_bytes())


def finalize(store: RunStore, record: RunRecord, status: Status, error: RunError | None,
             declared_outputs: Iterable[str] = ()) -> None:
    """Fold the notebook's events into the record, hash the folder, write the end state."""
    run_dir = store.path(record["id"])
    fold_events(record, read_events(run_dir))
    missing = [o for o in declared_outputs if o not in record["outputs"]]
    if missing and status == "succeeded":
        record["warnings"].append(f"declared outputs not produced: {', '.join(missing)}")
    record["status"] = status
    record["error"] = error
    now = time.time()
    record["ended_at"] = utcnow()
    record["duration_s"] = round(now - record.get("started_at_epoch", now), 3)
    keep_evidence(run_dir)
    record["artifacts"] = hash_artifacts(run_dir)
    if record["mlflow"] is not None:
        record["mlflow"]["synced"] = False
    store.write(record)


def internal_error(exc: BaseException) -> RunError:
    """The error block of a run ended by a bug of ours (or a dead runner)."""
    return {"ename": type(exc).__name__, "evalue": str(exc), "cell_index": None,
            "message": f"nbops internal error: {exc!r}"}
