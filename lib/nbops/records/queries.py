"""Reading the run store: get, list, verify, load runs and their models.

Every read reconciles: a record whose runner died is marked ``killed`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ..errors import NbopsError, RecordError
from ..tracking.uri import NO_TRACKING
from ..util.envvars import current_runs_dir
from .integrity import Verification
from .integrity import verify_runs as _verify_runs
from .mirror import sync
from .reconcile import reconcile
from .relocate import rebase
from .store import RUN_FILE, RunStore, read_events
from .types import MetricPoint, RunRecord, Status


def get_record(run_id: str, runs_dir: str | Path | None = None) -> RunRecord:
    store = RunStore.at(runs_dir)
    return reconcile(store, store.read(run_id))


def resolve_run(ref: str, runs_dir: str | Path | None = None, stage: str | None = None
                ) -> str:
    """The run id ``ref`` names: ``latest``, an exact id, or a unique id prefix."""
    from .select import resolve_id

    store = RunStore.at(runs_dir)

    def stage_of(run_id: str) -> str:
        try:
            return store.read(run_id, full=False)["stage"]
        except RecordError:
            return ""

    return resolve_id(ref, store.ids(), stage_of, stage)


def list_records(runs_dir: str | Path | None = None, *, stage: str | None = None,
                 status: Status | None = None, problems: list[str] | None = None
                 ) -> list[RunRecord]:
    """Every readable record (reconciled), oldest first, filtered by stage and status.

    Unreadable records are skipped and described in ``problems`` when it is given.
    """
    store = RunStore.at(runs_dir)
    found = []
    for run_id in store.ids():
        try:
            record = reconcile(store, store.read(run_id, full=False))
        except RecordError as exc:
            if problems is not None:
                problems.append(str(exc))
            continue
        if (stage is None or record["stage"] == stage) and (
                status is None or record["status"] == status):
            found.append(record)
    return found


def verify_runs(run_ids: list[str] | None = None, runs_dir: str | Path | None = None
                ) -> Verification:
    """Re-hash the given runs (all runs when none are given), each reconciled first: a run
    still running is listed as such, not checked."""
    store = RunStore.at(runs_dir)
    return _verify_runs(store, run_ids, lambda record: reconcile(store, record))


SyncState = Literal["synced", "already", "running", "untracked", "failed"]


class SyncResult(NamedTuple):
    """What ``sync_runs`` did with one run: ``synced`` (mirrored now), ``already``
    (mirrored before), ``running`` (skipped: mirrored when it ends), ``untracked``
    (recorded with ``--tracking-uri none``) or ``failed`` (``note`` says why)."""

    run_id: str
    state: SyncState
    note: str = ""


def sync_runs(run_ids: list[str] | None = None, runs_dir: str | Path | None = None
              ) -> list[SyncResult]:
    """Mirror finished runs whose mirror is missing (``mlflow`` absent or not ``synced``):
    a tracking server that was down, a runner that died, a hand run whose kernel was
    killed. A record whose runner died is reconciled first (``killed``, mirrored). Returns
    what happened to each run (all runs when none are given, else the ones named)."""
    store = RunStore.at(runs_dir)
    done: list[SyncResult] = []
    for run_id in run_ids or store.ids():
        try:
            record = store.read(run_id)
            was_synced = bool(record["mlflow"] and record["mlflow"]["synced"])
            if record["status"] == "running":
                record = reconcile(store, record)  # its runner died: killed, mirrored
        except RecordError as exc:
            done.append(SyncResult(run_id, "failed", str(exc)))
            continue
        info = record["mlflow"]
        if record["status"] == "running":
            done.append(SyncResult(run_id, "running"))
            continue
        if info is not None and info["tracking_uri"] == NO_TRACKING:
            done.append(SyncResult(run_id, "untracked"))
            continue
        if info is None or not info["synced"]:
            record = sync(store.path(run_id))
            info = record["mlflow"]
        if info is not None and info["synced"]:
            done.append(SyncResult(run_id, "already" if was_synced else "synced",
                                   info["run_id"] or ""))
        else:
            done.append(SyncResult(run_id, "failed", record["warnings"][-1]
                                   if record["warnings"] else "not synced"))
    return done


def tracked_run_id(run: str | Path, runs_dir: str | Path | None = None) -> str | None:
    """The tracked (MLflow) run id of a finished run, given its id or folder; a mirror
    still pending (a background mirror, a crashed one) is waited for or done now."""
    folder = Path(run)
    if not (folder / "run.json").is_file():
        folder = RunStore.at(runs_dir).path(str(run))
    info = sync(folder)["mlflow"]
    return info["run_id"] if info else None


@dataclass
class Run:
    """A finished run, for notebooks and scripts: ``nbops.load_run(run_id)``."""

    record: RunRecord
    path: Path

    @property
    def id(self) -> str:
        return str(self.record["id"])

    @property
    def status(self) -> Status:
        return self.record["status"]

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

    def metric_history(self, name: str) -> list[MetricPoint]:
        return list(self.record["metric_history"].get(name, []))

    def load_model(self, name: str | None = None) -> Any:
        """Load a model of this run after verifying its files against the record."""
        from ..models import load_verified

        models = self.record["models"]
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
    """Load the model stored at ``runs/<run_id>/models/<name>``, verified against its record.

    A path into a run that this project's runs folder holds is read from there (a copied
    or moved project loads its own copy, never the original's)."""
    folder = Path(rebase(str(Path(path).resolve()), current_runs_dir()))
    run_dir = folder.parent.parent
    if folder.parent.name != "models" or not (run_dir / RUN_FILE).is_file():
        raise NbopsError(f"{path} is not a model folder of an nbops run "
                         "(expected runs/<run_id>/models/<name>)")
    record = RunStore(run_dir.parent).read(run_dir.name)
    if folder.name not in record["models"] and record["status"] == "running":
        pending = _logged_by_running_run(run_dir, folder.name)
        if pending is not None:  # this run logged it moments ago: verify against the event
            from ..models import load_verified

            return load_verified(run_dir, f"models/{folder.name}", pending["flavor"],
                                 pending["files"])
    return Run(record, run_dir).load_model(folder.name)


def _logged_by_running_run(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The last model event for ``name`` of a run still in progress (with file hashes)."""
    found = [e for e in read_events(run_dir)
             if e.get("kind") == "model" and e.get("name") == name and "files" in e]
    return found[-1] if found else None


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    store = RunStore.at(runs_dir)
    record = reconcile(store, store.read(run_id))
    return Run(record, store.path(run_id))
