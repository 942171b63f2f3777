"""Mirroring beside the kernel: a mirror process per command-line run, a mirror thread
per driver. Whoever starts a mirror waits for it: when an nbops command returns, its
records are final and mirrored (or say why not), and nothing of it writes any more.

- :func:`spawn`: ``nbops run`` starts a small child process first thing; it imports MLflow
  while the runner checks the template and parameters (and is stopped, having written
  nothing, if they are wrong). Once the run's record exists (:meth:`MirrorProcess.attach`)
  the child opens the tracking store (creating and migrating it under the store's lock the
  first time) while the kernel runs; when the record is final (:meth:`MirrorProcess.close`)
  the child mirrors it and exits, and the runner waits for that, at most
  :func:`mirror_timeout` seconds. If the runner dies instead, the child finds the record
  still ``running`` and reconciles it (marked ``killed``, mirrored).
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
from ..tracking.base import Tracker, open_tracker, tracker_kind
from ..tracking.mlflow import preload
from ..util.envvars import MIRROR_TIMEOUT, kernel_base_env
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
    """The handle of a mirror child: :meth:`attach` once the record exists, :meth:`close`
    once it is final (or when no record was made)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.run_dir: Path | None = None

    def attach(self, run_dir: Path) -> None:
        """Give the child the run's folder: it opens the tracking store meanwhile."""
        self.run_dir = run_dir
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):  # a child already gone: close() says so
            self.process.stdin.write(os.fsencode(str(run_dir)) + b"\n")
            self.process.stdin.flush()

    def close(self, timeout: float) -> RunRecord | None:
        """The record is final (or none was made): wait until the child has mirrored it,
        at most ``timeout`` seconds (then it is stopped). Returns the record as it is on
        disk (None without a record: the child, which wrote nothing, is stopped); a mirror
        that failed or overran left a warning in it and on stderr."""
        if self.run_dir is None:
            self._stop()
            return None
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
            problem = f"ended with exit code {code}" if code else ""
        except KeyboardInterrupt:  # Ctrl-C while waiting: the record is final already
            print(f"nbops: the MLflow mirror of run {self.run_dir.name} goes on in process "
                  f"{self.process.pid}; if it is stopped, 'nbops runs sync "
                  f"{self.run_dir.name}' mirrors the run", file=sys.stderr)
            raise
        except subprocess.TimeoutExpired:
            self._stop()
            problem = f"did not finish within {timeout:g} s ({MIRROR_TIMEOUT}) and was stopped"
        return self._note(problem)

    def _stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: nothing left
        self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def _note(self, problem: str) -> RunRecord:
        assert self.run_dir is not None
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


# the child skips rfc3987_syntax as the command line does (cli.app.fast_start): jsonschema
# treats it as optional, and importing it builds a grammar (1-2 s of CPU) for nothing; it
# ends with os._exit once its work is written (every record write is fsync'ed, MLflow's
# SQLite commits are durable): an interpreter holding MLflow took seconds to tear down,
# which the runner, waiting for its mirror, would pay
_CHILD = ("import sys, os; sys.modules.setdefault('rfc3987_syntax', None); "
          "from nbops.records.background import _main; code = _main(sys.argv[1]); "
          "sys.stdout.flush(); sys.stderr.flush(); os._exit(code)")


def spawn(tracking_uri: str) -> MirrorProcess:
    """Start a mirror child before the run's record exists (it imports MLflow meanwhile,
    and writes nothing until :meth:`MirrorProcess.attach`): in its own session (Ctrl-C in
    the terminal stops the run, which then waits for its mirror), its warnings on this
    stderr."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, tracking_uri], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, env=kernel_base_env(), start_new_session=True)
    return MirrorProcess(process)


def _child(tracking_uri: str) -> None:
    if tracker_kind(tracking_uri) == "mlflow":
        preload()  # MLflow's import: seconds, while the runner checks the run's inputs
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):
        return  # no record was made (bad input), or the runner died before it
    run_dir = Path(os.fsdecode(line[:-1]))
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    info = record["mlflow"]
    tracker: Tracker | None = None
    if info is not None and info["tracking_uri"]:
        try:  # while the kernel runs: opening (or creating) the store takes a second
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


def _main(tracking_uri: str) -> int:
    try:
        _child(tracking_uri)
    except Exception as exc:  # noqa: BLE001 - the runner notes it in the record
        print(f"nbops: error: the MLflow mirror failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0
