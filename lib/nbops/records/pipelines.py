"""Pipeline records: ``runs/pipelines/<id>.json`` (schema ``nbops.pipeline/1``).

Validated on every write and read, like run records; written atomically. Every read
reconciles, like run records: a record still ``running`` whose driver (the process that
ran the pipeline, ``driver``) is gone is marked ``killed`` with the reason, its running
stages and their runs too, what its zygotes left is killed, and its MLflow parent run is
ended KILLED.
"""

from __future__ import annotations

from pathlib import Path

from ..tracking.base import open_tracker
from .documents import DocumentStore
from .reconcile import driver_gone, end_leftovers, gone_message, reconcile_runs, seconds_since
from .schema import PIPELINE_SCHEMA
from .store import RunStore, utcnow
from .types import PipelineRecord, RunRecord

FOLDER = "pipelines"


class PipelineStore(DocumentStore[PipelineRecord]):
    """The pipeline records of a runs folder."""

    folder = FOLDER
    schema = PIPELINE_SCHEMA
    noun = "pipeline run"
    list_command = "nbops pipeline ls"

    def read(self, doc_id: str) -> PipelineRecord:
        """The validated record, reconciled (see the module's docstring).

        Raises:
            RunNotFoundError: no such record (with the closest id).
            RecordError: unreadable or invalid record.
        """
        return self.reconcile(super().read(doc_id))

    def reconcile(self, record: PipelineRecord) -> PipelineRecord:
        """Mark a ``running`` record whose driver is gone ``killed`` (written), with its
        running stages; any other record is returned as it is."""
        driver = record.get("driver")
        if record.get("status") != "running" or driver is None or not driver_gone(driver):
            return record
        end_leftovers(driver)
        pipeline_id = record["id"]

        def belongs(run: RunRecord) -> bool:
            return run["pipeline"] is not None and run["pipeline"]["run_id"] == pipeline_id

        runs = reconcile_runs(RunStore(self.root.parent), belongs)
        by_stage = {r["pipeline"]["stage"]: r for r in runs.values()  # (the latest)
                    if r["pipeline"] and r["status"] != "succeeded"}
        reason = gone_message("driver", driver)
        for name, stage in record["stages"].items():
            if stage["status"] == "running":
                run = by_stage.get(name)
                stage.update({"status": "killed", "error": reason,
                              "run_id": stage["run_id"] or (run["id"] if run else None)})
        record.update({"status": "killed", "ended_at": utcnow(),
                       "duration_s": seconds_since(record["started_at"]),
                       "error": f"pipeline {reason}. Run 'nbops pipeline run "
                                f"{record['file']}' again: succeeded stages are reused "
                                "from the cache."})
        self.write(record)
        _end_parent(record, self.root.parent)
        return record


def _end_parent(record: PipelineRecord, runs_dir: Path) -> None:
    """End the pipeline's MLflow parent run KILLED (best effort: the record is the truth)."""
    tracking = record.get("mlflow")
    if not tracking:
        return
    try:
        open_tracker(tracking["tracking_uri"], runs_dir).finish_parent(
            tracking["run_id"], "killed", record.get("summary") or {})
    except Exception:  # noqa: BLE001 - tracking trouble never stops a reader
        pass
