"""Reading the run store: list, show, verify, load; and reconciling dead runs.

A record left ``running`` by a runner that no longer exists (SIGKILL, power loss) is
marked ``killed`` the next time the store is read, its orphaned kernel is killed, and its
MLflow run is set to KILLED.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import records
from .environment import process_alive
from .errors import NbopsError, RecordError
from .records import RunStore


def _store(runs_dir: str | Path | None) -> RunStore:
    return RunStore(records.resolve_runs_dir(runs_dir))


def reconcile(store: RunStore, record: dict[str, Any]) -> dict[str, Any]:
    """Mark a ``running`` record whose runner is gone as ``killed``; retry a failed mirror."""
    runner = record.get("runner") or {}
    if runner.get("host") not in (None, socket.gethostname()):
        return record  # cannot see processes on another machine
    alive = process_alive(int(runner.get("pid", 0) or 0), runner.get("proc_start"))
    if record["status"] == "running" and not alive:
        _kill_orphan(runner.get("kernel_pid"))
        from .runner import finalize

        message = f"runner process {runner.get('pid')} ended without finishing the run (killed)"
        finalize(store, record, "killed", {"ename": "RunnerDied", "evalue": "",
                                           "cell_index": None, "message": message})
        from .runner import sync_to_mlflow

        sync_to_mlflow(store.path(record["id"]))
    return record


def _kill_orphan(pid: Any) -> None:
    if not pid:
        return
    try:
        os.killpg(os.getpgid(int(pid)), signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def get_record(run_id: str, runs_dir: str | Path | None = None) -> dict[str, Any]:
    store = _store(runs_dir)
    return reconcile(store, store.read(run_id))


def list_records(runs_dir: str | Path | None = None, *, stage: str | None = None,
                 status: str | None = None, problems: list[str] | None = None
                 ) -> list[dict[str, Any]]:
    """Every readable record (reconciled), oldest first, filtered by stage and status.

    Unreadable records are skipped and described in ``problems`` when it is given.
    """
    store = _store(runs_dir)
    found = []
    for run_id in store.ids():
        try:
            record = reconcile(store, store.read(run_id))
        except RecordError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        if (stage is None or record["stage"] == stage) and (
                status is None or record["status"] == status):
            found.append(record)
    return found


def verify_runs(run_ids: list[str] | None = None, runs_dir: str | Path | None = None
                ) -> list[str]:
    """Problems found re-hashing the given runs (all runs when none are given)."""
    store = _store(runs_dir)
    problems: list[str] = []
    for run_id in run_ids or store.ids():
        try:
            record = store.read(run_id)
        except RecordError as exc:
            problems.append(f"{run_id}: {exc}")
            continue
        problems += records.verify(store.path(run_id), record)
    return problems


@dataclass
class Run:
    """A finished run, for notebooks and scripts: ``nbops.load_run(run_id)``."""

    record: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.record["parameters"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.record["metrics"])

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.record["outputs"])

    @property
    def artifacts(self) -> list[str]:
        return [a["path"] for a in self.record["artifacts"]]

    def artifact(self, path: str) -> Path:
        """Absolute path of a recorded artifact."""
        if path not in self.artifacts:
            raise NbopsError(f"run {self.id} has no artifact {path!r}; it has: "
                             f"{', '.join(self.artifacts)}")
        return self.path / path

    def metric_history(self, name: str) -> list[dict[str, Any]]:
        return list(self.record["metric_history"].get(name, []))

    def load_model(self, name: str | None = None) -> Any:
        """Load a model of this run after verifying its files against the record."""
        from .models import load_verified

        models = self.record.get("models", {})
        if not models:
            raise NbopsError(f"run {self.id} logged no model")
        if name is None:
            if len(models) > 1:
                raise NbopsError(f"run {self.id} has several models ({', '.join(models)}): "
                                 "name one")
            name = next(iter(models))
        if name not in models:
            raise NbopsError(f"run {self.id} has no model {name!r}; it has {', '.join(models)}")
        model = models[name]
        return load_verified(self.path, model["path"], model["flavor"], self.record["artifacts"])


def load_model(path: str | Path) -> Any:
    """Load the model stored at ``runs/<run_id>/models/<name>``, verified against its record."""
    folder = Path(path).resolve()
    run_dir = folder.parent.parent
    if folder.parent.name != "models" or not (run_dir / records.RUN_FILE).is_file():
        raise NbopsError(f"{path} is not a model folder of an nbops run "
                         "(expected runs/<run_id>/models/<name>)")
    return Run(RunStore(run_dir.parent).read(run_dir.name), run_dir).load_model(folder.name)


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    store = _store(runs_dir)
    record = reconcile(store, store.read(run_id))
    return Run(record, store.path(run_id))


def drift_history(runs_dir: str | Path | None = None, stage: str = "monitor"
                  ) -> list[dict[str, Any]]:
    """Drift share and action of each succeeded run of ``stage``, oldest first."""
    rows = []
    for record in list_records(runs_dir, stage=stage, status="succeeded"):
        outputs = record["outputs"]
        if "action" in outputs and "share_drifted" in outputs:
            rows.append({"id": record["id"], "started_at": record["started_at"],
                         "share_drifted": outputs["share_drifted"], "action": outputs["action"],
                         "drifted_columns": outputs.get("drifted_columns", [])})
    return rows


def plot_drift_history(rows: list[dict[str, Any]], path: Path) -> None:
    """PNG: share of drifted features over time, points coloured by action."""
    from datetime import datetime

    from matplotlib.figure import Figure

    colours = {"none": "tab:green", "warn": "tab:olive", "retrain": "tab:orange",
               "experiment": "tab:red"}
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    times = [datetime.fromisoformat(r["started_at"]) for r in rows]
    ax.plot(times, [r["share_drifted"] for r in rows], color="grey", lw=1)  # type: ignore[arg-type]
    for action, colour in colours.items():
        picked = [(t, r["share_drifted"]) for t, r in zip(times, rows, strict=True)
                  if r["action"] == action]
        if picked:
            ax.scatter(*zip(*picked, strict=True), color=colour, label=action, zorder=3)
    ax.set(title="drift over time", ylabel="share of drifted features")
    if rows:
        ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
