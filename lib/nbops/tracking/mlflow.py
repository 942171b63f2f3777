"""The MLflow tracker: explicit run ids, no global active run.

The embedded default is a SQLite store inside the runs folder. Creating a new SQLite store
or a new experiment from several processes at once races inside MLflow (broken store, runs
sent silently to ``Default``), so both happen once under a file lock in the runs folder,
and every write of a run goes through that lock too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models import guard_pickle
from ..util import envvars
from ..util.files import dumps
from .uri import default_uri

if TYPE_CHECKING:
    from ..records.types import RunRecord, Status, TrackingInfo

_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")
_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "killed": "KILLED", "running": "RUNNING",
           "pruned": "FINISHED"}
# A sweep trial pruned by Optuna: its record ends ``killed`` (the notebook was stopped) and
# carries this tag set to "pruned"; its MLflow run ends FINISHED, as Optuna's own MLflow
# callback records pruned trials (pruning is an outcome of the search, not an interruption).
TRIAL_STATE_TAG = "nbops.trial_state"
_IMPORT_LOCK = threading.Lock()


def import_mlflow() -> None:
    """Import MLflow's client, one thread at a time: its modules import each other, and two
    threads importing them at once (a driver preloading MLflow while another opens a tracker)
    both fail with "partially initialized module" (seen 6 times in 6 tries here)."""
    with _IMPORT_LOCK:
        import mlflow.tracking  # noqa: F401


class MlflowTracker:
    """Mirror of run records into MLflow (implements ``nbops.tracking.base.Tracker``)."""

    def __init__(self, uri: str, runs_dir: Path, experiment: str | None = None) -> None:
        guard_pickle()
        # a server that stops answering must not hold a finished run for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        for noisy in ("mlflow.store.db.utils", "alembic", "mlflow.tracking._tracking_service"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from filelock import FileLock

        import_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.runs_dir = runs_dir
        self.experiment_name = experiment or os.environ.get(envvars.EXPERIMENT, "nbops")
        runs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(runs_dir / ".mlflow.lock"), timeout=600)
        with self._lock:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            expected = (self.runs_dir / "mlartifacts").as_uri()
            old = str(found.artifact_location or "")
            if (self.uri == default_uri(self.runs_dir) and old != expected
                    and old.endswith("/mlartifacts")):
                relocate_store(self.runs_dir / "mlflow.db", old, expected)
            return str(found.experiment_id)
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.runs_dir / "mlartifacts").as_uri()
        try:
            return str(self.client.create_experiment(self.experiment_name,
                                                     artifact_location=location))
        except Exception:  # created meanwhile by another process on a shared server
            again = self.client.get_experiment_by_name(self.experiment_name)
            if again is None:
                raise
            return str(again.experiment_id)

    def start(self, record: RunRecord) -> TrackingInfo:
        """Create the MLflow run of a new record; returns the record's ``mlflow`` block."""
        tags = {"nbops.run_id": record["id"], "nbops.stage": record["stage"],
                "mlflow.runName": run_name(record["id"], record["stage"])}
        template = record["template"]
        if template is not None:
            tags["nbops.template"] = template["name"]
            tags["nbops.template_sha256"] = template["sha256"]
        origin = record.get("origin")
        if origin:
            tags.update({"mlflow.user": origin["user"], "nbops.trigger": origin["trigger"]})
            if origin["cycle"]:
                tags["nbops.cycle"] = origin["cycle"]
        tags.update(record["tags"])
        commit = record["environment"]["git"]["commit"]
        if commit:
            tags["mlflow.source.git.commit"] = commit
        with self._lock:
            run_id = self._left_by_a_stopped_mirror(record["id"])
            if run_id is None:
                start = int(record.get("started_at_epoch", time.time()) * 1000)
                run_id = str(self.client.create_run(self.experiment_id, tags=tags,
                                                    start_time=start).info.run_id)
        return {"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                "run_id": run_id, "synced": False}

    def _left_by_a_stopped_mirror(self, record_id: str) -> str | None:
        """The tracked run of ``record_id`` that a mirror created and was stopped before it
        could note its id in the record (killed, timed out): reused, never made twice."""
        if not _SAFE_ID.fullmatch(record_id):
            return None
        found = self.client.search_runs([self.experiment_id], max_results=1,
                                        filter_string=f"tags.`nbops.run_id` = '{record_id}'")
        return str(found[0].info.run_id) if found else None

    def finish(self, record: RunRecord, run_dir: Path) -> None:
        """Log params, metrics with steps, artifacts and models; set the final status."""
        from mlflow.entities import Metric, Param

        assert record["mlflow"] is not None and record["mlflow"]["run_id"] is not None
        run_id = record["mlflow"]["run_id"]
        params = [Param(k, _param_text(v)) for k, v in record["parameters"].items()]
        params += [Param(f"logged.{k}", _param_text(v))
                   for k, v in record["logged_params"].items()]
        metrics = [Metric(name, float(p["value"]), int(p["timestamp"] * 1000), p["step"])
                   for name, points in record["metric_history"].items() for p in points]
        with self._lock:
            for i in range(0, max(len(params), len(metrics)), 100):
                self.client.log_batch(run_id, metrics=metrics[i:i + 100],
                                      params=params[i:i + 100])
            self.client.set_tag(run_id, "nbops.status", record["status"])
            pruned = record["tags"].get(TRIAL_STATE_TAG) == "pruned"
            error = record["error"]
            if error is not None:  # the UI shows the note on the run page
                self.client.set_tag(run_id, "nbops.error", error["message"][:5000])
                self.client.set_tag(run_id, "mlflow.note.content",
                                    f"**{record['status']}**: {error['message'][:5000]}")
            if pruned:
                self.client.set_tag(run_id, "mlflow.note.content", (
                    f"**pruned** by sweep {record['tags'].get('nbops.sweep_run', '')} at step "
                    f"{record['tags'].get('nbops.pruned_at_step', '?')}: stopped before the "
                    "end; its metrics are those it logged until then"))
            self._log_files(run_id, run_dir, record)
            self._terminate(run_id, "pruned" if pruned else record["status"])

    def _log_files(self, run_id: str, run_dir: Path, record: RunRecord) -> None:
        for art in record["artifacts"]:
            path = Path(art["path"])
            if "symlink" in art:
                continue  # never upload what a link points to
            if path.parts and path.parts[0] == "models":
                continue
            if path.parts and path.parts[0] in ("artifacts", ".record"):  # (shown at the root)
                path = Path(*path.parts[1:])
            folder = path.parent.as_posix()
            self.client.log_artifact(run_id, str(run_dir / art["path"]),
                                     None if folder == "." else folder)
        for name, model in record["models"].items():
            self.client.log_artifacts(run_id, str(run_dir / model["path"]), model["path"])
            self._logged_model(run_id, run_dir, record, name)
        self._datasets(run_id, record)

    def _logged_model(self, run_id: str, run_dir: Path, record: RunRecord, name: str) -> None:
        """The model as an MLflow 3 logged model of the run (the UI's Models column and
        model pages), with the run's dataset inputs."""
        from mlflow.entities import LoggedModelOutput

        model = record["models"][name]
        logged = self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=run_id, model_type=model["flavor"],
            tags={"nbops.run_id": record["id"], "nbops.model_path": model["path"]})
        self.client.log_model_artifacts(logged.model_id, str(run_dir / model["path"]))
        self.client.finalize_logged_model(logged.model_id, "READY")
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])

    def _datasets(self, run_id: str, record: RunRecord) -> None:
        """Every input file the run read (nbops hashed them) as an MLflow dataset input."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(name=Path(i["path"]).name, digest=i["sha256"][:32],
                                       source_type="local", source=i["path"]),
                               tags=[InputTag("mlflow.data.context", i["parameter"])])
                  for i in record["inputs"]]
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def start_parent(self, pipeline_run_id: str, name: str, kind: str = "pipeline",
                     tags: dict[str, str] | None = None) -> str | None:
        """The parent MLflow run of a pipeline run or a sweep (``kind``); stage runs and
        trials become its children (``mlflow.parentRunId``)."""
        tags = {f"nbops.{kind}_run": pipeline_run_id, f"nbops.{kind}": name,
                "mlflow.runName": f"{kind} {name} {pipeline_run_id}", **(tags or {})}
        with self._lock:
            run = self.client.create_run(self.experiment_id, tags=tags)
        return str(run.info.run_id)

    def finish_parent(self, run_id: str, status: Status,
                      summary: dict[str, Any] | None = None,
                      metrics: dict[str, float] | None = None) -> None:
        from mlflow.entities import Metric

        with self._lock:
            self.client.set_tag(run_id, "nbops.status", status)
            if metrics:
                stamp = int(time.time() * 1000)
                self.client.log_batch(run_id, metrics=[
                    Metric(name, float(value), stamp, 0) for name, value in metrics.items()])
            if summary:
                lines = "\n".join(f"| {label} | {_param_text(value)[:200]} |"
                                   for label, value in summary.items())
                self.client.set_tag(run_id, "mlflow.note.content",
                                    f"**pipeline {status}**\n\n| | |\n|---|---|\n{lines}")
                for label, value in summary.items():
                    self.client.set_tag(run_id, f"summary.{label}"[:250],
                                        _param_text(value)[:5000])
            self._terminate(run_id, status)

    def _terminate(self, run_id: str, status: str) -> None:
        # MLflow prints "View run at <url>" on stdout for server URIs: keep stdout for our
        # own output (--json) and show the link on stderr.
        with contextlib.redirect_stdout(sys.stderr):
            self.client.set_terminated(run_id, _STATUS[status])

    def run_status(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.status)

    def count_runs(self) -> int:
        return len(self.client.search_runs([self.experiment_id], max_results=50000))


def preload() -> None:
    """Import MLflow's client (1-2 s of CPU) ahead of opening a store, as
    :class:`MlflowTracker` would (with pickles guarded)."""
    guard_pickle()
    from mlflow.tracking import MlflowClient  # noqa: F401


def relocate_store(db: Path, old: str, new: str) -> None:
    """The embedded store after its project folder was copied or moved: point the
    experiment, its runs and logged models at the artifacts beside this store, so nothing
    is ever written into the folder it was copied from (the store is nbops' own: a SQLite
    file in the runs folder; its artifacts live in ``mlartifacts/`` beside it)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("logged_models", "artifact_location")):
            connection.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))


def run_name(run_id: str, stage: str) -> str:
    """The MLflow run name: the stage first (``train-20261201T101500-1a2b3c``), so the runs
    table reads by stage; the nbops run id is in the ``nbops.run_id`` tag."""
    rest = run_id.replace(f"-{stage}-", "-", 1) if f"-{stage}-" in run_id else run_id
    return f"{stage}-{rest}"


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else dumps(value, indent=None)
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= 6000 else text[:5997] + "..."
