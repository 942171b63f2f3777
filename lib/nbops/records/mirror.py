"""Mirroring finished records to the tracker; repairing a mirror that never happened.

The tracked run is created once the outcome is known (with the real start time), so a run
record and its tracked run never disagree about the status. A tracking failure is stored in
the record as a warning (``mlflow.synced`` stays false) and never fails the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..tracking.base import Tracker, open_tracker
from ..tracking.uri import resolve_uri
from .store import RunStore
from .types import RunRecord


def mirror(tracker: Tracker, store: RunStore, record: RunRecord) -> None:
    """Create (if needed) and finish the record's tracked run; then write the record."""
    info = record["mlflow"]
    try:
        if info is None or not info.get("run_id"):
            info = tracker.start(record)
            record["mlflow"] = info
        tracker.finish(record, store.path(record["id"]))
        info["synced"] = True
    except Exception as exc:  # the record on disk stays the source of truth
        _note_failure(record, exc)
    store.write(record)


def _note_failure(record: RunRecord, exc: Exception) -> None:
    record["warnings"].append(f"MLflow mirror failed: {type(exc).__name__}: {exc}")
    print(f"nbops: warning: could not mirror run {record['id']} to MLflow: {exc} "
          "(nbops runs sync retries)", file=sys.stderr)


def sync(run_dir: str | Path) -> RunRecord:
    """Mirror a finished record (interactive runs, runs whose runner died, a server that was
    down); returns the record as written."""
    run_dir = Path(run_dir)
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    info = record["mlflow"]
    uri = (info["tracking_uri"] if info else "") or resolve_uri(None, run_dir.parent)
    record["mlflow"] = {"tracking_uri": uri,
                        "experiment_id": info["experiment_id"] if info else None,
                        "run_id": info["run_id"] if info else None, "synced": False}
    try:
        tracker = open_tracker(uri, run_dir.parent)
    except Exception as exc:  # e.g. the server is still down: stays unsynced, says so
        _note_failure(record, exc)
        store.write(record)
        return record
    mirror(tracker, store, record)
    return record
