"""Mirroring off the critical path: a mirror process per command-line run, a mirror thread
per driver.

- :func:`spawn`: ``nbops run`` starts a small child process as soon as the run's record
  exists. While the kernel runs, the child imports MLflow and opens the tracking store;
  when the runner closes the pipe (the record is final) the child mirrors the record and
  exits; the runner does not wait for it. If the runner dies instead, the child finds the
  record still ``running`` and reconciles it (marked ``killed``, mirrored).
- :class:`MirrorQueue`: a driver (a pipeline, a sweep, a Dask scheduler) hands finished
  records to one background thread of this process, which mirrors them in order; each
  submission returns a future, and a record submitted twice gets the same future.

Invariants: records are mirrored through :func:`~nbops.records.mirror.sync`, so each one at
most once, under the runs folder's mirror lock (one writer per store); a crash before a
mirror leaves the record final and unsynced, which ``nbops runs sync`` (or any reader that
needs the tracked run, through ``sync``) repairs.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..tracking.base import Tracker, open_tracker
from ..util.envvars import kernel_env
from .mirror import sync
from .reconcile import reconcile
from .store import RunStore
from .types import RunRecord


class BackgroundMirror:
    """The handle of a mirror child: :meth:`release` once the record is final."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def release(self) -> None:
        """Tell the child the record is final (it mirrors it without being waited for)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()


def spawn(run_dir: Path, tracking_uri: str) -> BackgroundMirror:
    """Start the mirror child of ``run_dir`` (in its own session: Ctrl-C in the terminal
    stops the run, not its mirror)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nbops.records.background", str(run_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=kernel_env(run_dir, tracking_uri), start_new_session=True)
    return BackgroundMirror(process)


def _child(run_dir: Path) -> None:
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    info = record["mlflow"]
    tracker: Tracker | None = None
    if info is not None and info["tracking_uri"]:
        try:  # while the kernel runs: MLflow's import and store set-up take seconds
            tracker = open_tracker(info["tracking_uri"], run_dir.parent)
        except Exception:  # noqa: BLE001 - sync opens it again and records why it failed
            tracker = None
    sys.stdin.buffer.read()  # returns when the runner closes the pipe or dies
    record = store.read(run_dir.name)
    if record["status"] == "running":
        reconcile(store, record)  # the runner died: killed, kernel ended, mirrored
        return
    sync(run_dir, tracker)


class MirrorQueue:
    """Mirrors finished records of this process in one background thread, in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nbops-mirror")
        self._lock = threading.Lock()
        self._futures: dict[Path, Future[RunRecord]] = {}
        self._trackers: dict[str, Tracker] = {}

    def submit(self, run_dir: Path) -> Future[RunRecord]:
        """Mirror ``run_dir``'s record soon; the same future for the same record."""
        run_dir = Path(run_dir)
        with self._lock:
            future = self._futures.get(run_dir)
            if future is None:
                future = self._futures[run_dir] = self._pool.submit(self._mirror, run_dir)
            return future

    def _mirror(self, run_dir: Path) -> RunRecord:
        record = RunStore(run_dir.parent).read(run_dir.name)
        info = record["mlflow"]
        uri = info["tracking_uri"] if info is not None else None
        tracker = self._trackers.get(uri) if uri else None
        if uri and tracker is None:
            try:
                tracker = self._trackers[uri] = open_tracker(uri, run_dir.parent)
            except Exception:  # noqa: BLE001 - sync records the failure in the record
                tracker = None
        return sync(run_dir, tracker)


_QUEUE: MirrorQueue | None = None
_QUEUE_LOCK = threading.Lock()


def mirror_queue() -> MirrorQueue:
    """This process's mirror queue (made on first use)."""
    global _QUEUE
    with _QUEUE_LOCK:
        if _QUEUE is None:
            _QUEUE = MirrorQueue()
        return _QUEUE


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
