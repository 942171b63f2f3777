"""Mirroring beside the kernel: a mirror process per command-line run, a mirror thread
per driver. Whoever starts a mirror waits for it: when an nbops command returns, its
records are final and mirrored (or say why not), and nothing of it writes any more.

- :func:`spawn`: ``nbops run`` starts a small child process as soon as the run's record
  exists. While the kernel runs, the child imports MLflow and opens the tracking store
  (creating and migrating it under the store's lock the first time); when the runner
  calls :meth:`MirrorProcess.finish` (the record is final) the child mirrors the record
  and exits, and the runner waits for that, at most :func:`mirror_timeout` seconds. If the
  runner dies instead, the child finds the record still ``running`` and reconciles it
  (marked ``killed``, mirrored).
- :class:`MirrorQueue`: a driver (a pipeline, a sweep, a Dask scheduler) hands finished
  records to one background thread of this process, which mirrors them in order; each
  submission returns a future, and a record submitted twice gets the same future. The
  driver waits for every future before it returns.

Invariants: records are mirrored through :func:`~nbops.records.mirror.sync`, so each one at
most once, under the runs folder's mirror lock (one writer per store); a mirror that fails
or overruns its time leaves the record final, unsynced and with a warning that says so,
which ``nbops runs sync`` (or any reader that needs the tracked run, through ``sync``)
repairs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..errors import ConfigError
from ..tracking.base import Tracker, open_tracker
from ..util.envvars import MIRROR_TIMEOUT, kernel_env
from .mirror import mirror_lock, sync
from .reconcile import reconcile
from .store import RunStore
from .types import RunRecord

DEFAULT_MIRROR_TIMEOUT = 600.0  # seconds; the mirror lock's own timeout


def mirror_timeout() -> float:
    """How long a runner waits for its mirror process: ``$NBOPS_MIRROR_TIMEOUT`` seconds,
    else :data:`DEFAULT_MIRROR_TIMEOUT`.

    Raises:
        ConfigError: the variable is not a positive number.
    """
    text = os.environ.get(MIRROR_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_MIRROR_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{MIRROR_TIMEOUT}={text!r} is not a positive number of seconds; "
                          f"set it to e.g. {DEFAULT_MIRROR_TIMEOUT:g} or unset it")
    return value


class MirrorProcess:
    """The handle of a mirror child: :meth:`finish` once the record is final."""

    def __init__(self, process: subprocess.Popen[bytes], run_dir: Path) -> None:
        self.process = process
        self.run_dir = run_dir

    def finish(self, timeout: float) -> RunRecord:
        """Tell the child the record is final and wait until it has mirrored it (at most
        ``timeout`` seconds; then it is stopped). Returns the record as it is on disk; a
        mirror that failed or overran left a warning in it and on stderr."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
            problem = f"ended with exit code {code}" if code else ""
        except KeyboardInterrupt:  # Ctrl-C while waiting: the record is final already
            print(f"nbops: the MLflow mirror of run {self.run_dir.name} goes on in process "
                  f"{self.process.pid}; if it is stopped, 'nbops runs sync {self.run_dir.name}' "
                  "mirrors the run", file=sys.stderr)
            raise
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: nothing left
            self.process.wait()
            problem = f"did not finish within {timeout:g} s ({MIRROR_TIMEOUT}) and was stopped"
        store = RunStore(self.run_dir.parent)
        if not problem:
            return store.read(self.run_dir.name)
        with mirror_lock(store.root):
            record = store.read(self.run_dir.name)
            info = record["mlflow"]
            if info is None or not info["synced"]:
                note = (f"MLflow mirror {problem}; the run record is final: "
                        f"'nbops runs sync {record['id']}' mirrors it")
                record["warnings"].append(note)
                store.write(record)
                print(f"nbops: warning: {note}", file=sys.stderr)
        return record


def spawn(run_dir: Path, tracking_uri: str) -> MirrorProcess:
    """Start the mirror child of ``run_dir``: in its own session (Ctrl-C in the terminal
    stops the run, which then waits for its mirror), its warnings on this stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nbops.records.background", str(run_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        env=kernel_env(run_dir, tracking_uri), start_new_session=True)
    return MirrorProcess(process, run_dir)


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


def _main(run_dir: Path) -> int:
    try:
        _child(run_dir)
    except Exception as exc:  # noqa: BLE001 - the runner notes it in the record
        print(f"nbops: error: mirroring {run_dir.name} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1])))
