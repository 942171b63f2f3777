"""Loop cycle records: ``runs/loop/cycles/<id>.json`` (schema ``nbops.cycle/1``).

Validated on every write and read; written atomically. Ids start with the cycle's UTC start
time, so listing them in order lists the cycles in the order they started. Every read
reconciles: a cycle still ``running`` whose tick (``driver``) is gone is marked ``killed``
with the reason, and so are its runs (``origin.cycle``) and its retrain pipeline; what its
zygotes left is killed.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NbopsError
from .documents import DocumentStore
from .pipelines import PipelineStore
from .reconcile import driver_gone, end_leftovers, gone_message, reconcile_runs, seconds_since
from .schema import CYCLE_SCHEMA
from .store import RunStore, utcnow
from .types import CycleRecord, RunRecord

FOLDER = "loop/cycles"


class CycleStore(DocumentStore[CycleRecord]):
    """The loop cycles of a runs folder."""

    folder = FOLDER
    schema = CYCLE_SCHEMA
    noun = "loop cycle"
    list_command = "nbops loop history"

    def __init__(self, runs_dir: Path) -> None:
        super().__init__(runs_dir)
        self.closed: list[CycleRecord] = []  # the cycles this store marked killed

    def read(self, doc_id: str) -> CycleRecord:
        """The validated cycle, reconciled (see the module's docstring).

        Raises:
            RunNotFoundError: no such cycle (with the closest id).
            RecordError: unreadable or invalid record.
        """
        return self.reconcile(super().read(doc_id))

    def all(self) -> list[CycleRecord]:
        """Every readable cycle, oldest first (an unreadable one is skipped: history and
        limits are computed from what can be read)."""
        found: list[CycleRecord] = []
        for cycle_id in self.ids():
            try:
                found.append(self.read(cycle_id))
            except NbopsError:
                continue
        return found

    def reconcile(self, record: CycleRecord) -> CycleRecord:
        """Mark a ``running`` cycle whose tick is gone ``killed`` (written); any other
        record is returned as it is."""
        driver = record.get("driver")
        if record["status"] != "running" or driver is None or not driver_gone(driver):
            return record
        end_leftovers(driver)
        runs_dir = self.root.parent.parent
        cycle_id = record["id"]

        def belongs(run: RunRecord) -> bool:
            origin = run.get("origin")  # (absent in older records)
            return origin is not None and origin.get("cycle") == cycle_id

        reconcile_runs(RunStore(runs_dir), belongs)
        reason = gone_message("tick", driver)
        if record["pipeline_run"]:
            try:
                PipelineStore(runs_dir).read(record["pipeline_run"])  # reconciled
            except NbopsError:
                pass
            reason += f", during the retrain {record['pipeline_run']} (marked killed too)"
        record.update({"status": "killed", "ended_at": utcnow(),
                       "duration_s": seconds_since(record["started_at"]),
                       "error": f"{reason}; the next tick decides afresh"})
        self.write(record)
        self.closed.append(record)
        return record
