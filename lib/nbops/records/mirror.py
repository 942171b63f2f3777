"""Mirroring finished records to the tracker; repairing a mirror that never happened.

The tracked run is created once the outcome is known (with the real start time), so a run
record and its tracked run never disagree about the status. A tracking failure is stored in
the record as a warning (``mlflow.synced`` stays false) and never fails the run.

Exactly once: :func:`sync` mirrors under the runs folder's mirror lock and re-reads the
record first, so a background mirror, ``nbops runs sync`` and a reader that needs the
tracked run id (:func:`sync` again) never mirror one record twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from filelock import FileLock

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


MIRROR_LOCK = ".mirror.lock"  # in the runs folder: one writer to its tracking store


def mirror_lock(runs_dir: Path) -> FileLock:
    return FileLock(str(runs_dir / MIRROR_LOCK), timeout=600)


def sync(run_dir: str | Path, tracker: Tracker | None = None) -> RunRecord:
    """Mirror a finished record not mirrored yet (interactive runs, background mirrors,
    runs whose runner died, a server that was down); returns the record as written. A
    record still running or already mirrored is returned as it is."""
    run_dir = Path(run_dir)
    store = RunStore(run_dir.parent)
    with mirror_lock(store.root):
        record = store.read(run_dir.name)
        info = record["mlflow"]
        if record["status"] == "running" or (info is not None and info["synced"]):
            return record
        return _sync(store, record, tracker)


def _sync(store: RunStore, record: RunRecord, tracker: Tracker | None) -> RunRecord:
    info = record["mlflow"]
    run_dir = store.path(record["id"])
    uri = (info["tracking_uri"] if info else "") or resolve_uri(None, run_dir.parent)
    record["mlflow"] = {"tracking_uri": uri,
                        "experiment_id": info["experiment_id"] if info else None,
                        "run_id": info["run_id"] if info else None, "synced": False}
    try:
        if tracker is None or tracker.uri != uri:
            tracker = open_tracker(uri, run_dir.parent)
    except Exception as exc:  # e.g. the server is still down: stays unsynced, says so
        _note_failure(record, exc)
        store.write(record)
        return record
    mirror(tracker, store, record)
    return record
