"""Stage tasks on Dask workers (``--dask ADDRESS|local:N``), with ``distributed`` as engine.

Invariants:

- One writer: workers run :func:`~nbops.pipeline.task.run_task` with ``mirror="driver"``;
  only this process (the driver) writes to the tracking store, from one thread, and it
  mirrors a task's record before the Future returned by :meth:`DaskScheduler.submit`
  resolves. That Future yields the final record (or raises :class:`WorkerLostError` when
  the worker died before the run began), exactly like the thread scheduler's.
- At most one run per submission: tasks go to Dask with ``retries=0``. A local cluster's
  scheduler has ``allowed-failures: 0``; for any scheduler, a claim file per submission
  (:mod:`~nbops.pipeline.dask_worker`) makes an attempt that Dask reschedules after its
  worker died end as "worker lost" without running the notebook.
  Only a ``retryable`` task is submitted again, by the driver, at most ``RETRIES`` times,
  each attempt a run record of its own.
- No run is left ``running`` by a dead worker: the driver finalizes it ``failed`` with
  "worker lost" (``killed`` when its stop event was set: Ctrl-C in a terminal also reaches
  a local cluster's workers) and kills its orphaned kernel when that runs on this host.
- Before a task is submitted, every worker has shown that it sees the task's working
  folder and template and sees (and can write) the runs folder the driver sees.
- A set ``stop`` event reaches the worker through a ``distributed.Event`` per task, polled
  by a thread there that sets the run's own stop event: the kernel is killed, the run ends
  ``killed``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import distributed

from ..errors import NbopsError, UsageError, WorkerLostError
from ..records.mirror import sync
from ..records.reconcile import abandon
from ..records.store import RUN_FILE, RunStore
from ..records.types import RunRecord
from . import dask_worker
from .address import DaskTarget
from .dask_worker import Claim, claim_path, event_name, probe_paths, read_claim, work
from .task import StageTask

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler (and to see its first worker)
RETRIES = 2  # extra attempts of a retryable stage whose worker was lost
SHUTDOWN_WAIT = 60.0  # seconds shutdown waits for stopped runs to end and be mirrored


@dataclass
class _Handle:
    """One submission, across its attempts."""

    task: StageTask
    stop: threading.Event
    future: Future[RunRecord]
    token: str = ""
    attempt: int = 1
    stop_sent: bool = False
    dfuture: distributed.Future[RunRecord] | None = None


def open_dask(target: DaskTarget, jobs: int | None) -> DaskScheduler:
    """Connect to (or start) the cluster; ``jobs`` None: one task per worker thread.

    Raises:
        UsageError: unreachable within ``CONNECT_TIMEOUT``, or no workers.
    """
    cluster: distributed.LocalCluster | None = None
    if target["kind"] == "local":
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(
                n_workers=target["workers"], threads_per_worker=1, processes=True,
                dashboard_address=":0", preload=[dask_worker.__name__])  # its dask_setup
    where = cluster if cluster is not None else target["address"]
    try:
        client = distributed.Client(where, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as exc:
        if cluster is not None:
            cluster.close()
        raise UsageError(f"cannot reach the Dask scheduler at {target['address']} within "
                         f"{CONNECT_TIMEOUT:.0f} s ({type(exc).__name__}: {exc}). Start it "
                         "(dask scheduler; dask worker ADDRESS) or use --dask local:N.") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except Exception:
        client.close()
        raise UsageError(f"the Dask scheduler at {target['address']} has no workers; start "
                         f"some (dask worker {target['address']})") from None
    threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    return DaskScheduler(client, jobs or max(1, threads), cluster)


class DaskScheduler:
    """Submits stage tasks to a Dask cluster; settles and mirrors them on the driver."""

    def __init__(self, client: distributed.Client, jobs: int,
                 cluster: distributed.LocalCluster | None = None) -> None:
        self.client, self.cluster, self.jobs = client, cluster, max(1, jobs)
        self._handles: dict[str, _Handle] = {}  # submitted to Dask, by claim token
        self._waiting: deque[_Handle] = deque()  # beyond ``jobs`` in flight: not yet sent
        self._lock = threading.Lock()
        self._checked: set[tuple[str, bool]] = set()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nbops-dask-driver")
        self._closed = threading.Event()
        self._stopping = False  # shutdown(cancel=True): every task in flight is stopped
        self._watcher = threading.Thread(target=self._watch_stops, daemon=True,
                                         name="nbops-dask-stops")
        self._watcher.start()

    def submit(self, task: StageTask, stop: threading.Event) -> Future[RunRecord]:
        """Ship ``task`` to a worker (paths checked first); the Future yields its record."""
        # the driver's thread budget and progress bar mean nothing on a worker, whose own
        # settings (nanny pre-spawn-environ: 1 thread) apply
        task = replace(task, mirror="driver", threads=None, progress=False)
        self.check_paths([task.cwd, task.template_path], [task.runs_dir])
        handle = _Handle(task, stop, Future())
        with self._lock:
            self._waiting.append(handle)
        self._pump()
        return handle.future

    def check_paths(self, readable: Iterable[Path], writable: Iterable[Path]) -> None:
        """Raise UsageError naming the workers that do not see a path (writable: see the
        driver's probe file in it and create one of their own)."""
        wanted = [(str(Path(p).resolve()), False) for p in readable]
        wanted += [(str(Path(p).resolve()), True) for p in writable]
        todo = [w for w in wanted if w not in self._checked]
        if not todo:
            return
        probes = {path: _driver_probe(Path(path)) for path, write in todo if write}
        try:
            answers = self.client.run(probe_paths, todo, probes, on_error="return")
        finally:
            for probe in probes.values():
                probe.unlink(missing_ok=True)
        problems = _path_problems(answers)
        if problems:
            raise UsageError("the Dask workers must share this machine's filesystem (the same "
                             "paths, e.g. an NFS mount), and they do not:\n" +
                             "\n".join(f"  - {p}" for p in problems) +
                             "\nMount the folders on every worker at the same path, or use "
                             "--dask local:N.")
        self._checked.update(todo)

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for tasks in flight, then close the client, and the cluster if this
        scheduler started it. ``cancel``: first stop every task in flight (started or
        not: its run ends ``killed``, its kernel gone), and wait at most ``SHUTDOWN_WAIT``
        (a task Dask has not started cannot be told apart safely from one just starting,
        so none is dropped unseen)."""
        self._stopping = self._stopping or cancel
        with self._lock:
            dropped = list(self._waiting) if cancel else []
            for handle in dropped:
                self._waiting.remove(handle)
            futures = [h.future for h in (*self._handles.values(), *self._waiting)]
        for handle in dropped:  # never sent to Dask: nothing ran
            handle.future.cancel()
        wait(futures, timeout=SHUTDOWN_WAIT if cancel else None)
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while self._handles and time.monotonic() < deadline:  # retries: new submissions
            time.sleep(0.2)
        self._closed.set()
        self._writer.shutdown(wait=True)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def _pump(self) -> None:
        """Send waiting tasks to Dask while fewer than ``jobs`` are in flight."""
        while True:
            with self._lock:
                if not self._waiting or len(self._handles) >= self.jobs:
                    return
                handle = self._waiting.popleft()
            self._launch(handle)

    def _launch(self, handle: _Handle) -> None:
        handle.token = uuid.uuid4().hex
        handle.stop_sent = False
        with self._lock:
            self._handles[handle.token] = handle
        dfuture = self.client.submit(work, handle.task, handle.token, retries=0, pure=False,
                                     key=f"nbops-{handle.task.stage}-{handle.token}")
        handle.dfuture = dfuture
        dfuture.add_done_callback(lambda done: self._writer.submit(self._settle, handle, done))

    def _watch_stops(self) -> None:
        """Forward each set stop event to its task's ``distributed.Event``."""
        while not self._closed.wait(0.2):
            with self._lock:
                due = [h for h in self._handles.values()
                       if (self._stopping or h.stop.is_set()) and not h.stop_sent]
            for handle in due:
                try:
                    distributed.Event(event_name(handle.token), client=self.client).set()
                    handle.stop_sent = True
                except Exception:  # the scheduler is gone: the settle path reports it
                    pass

    def _settle(self, handle: _Handle, dfuture: distributed.Future[RunRecord]) -> None:
        """Runs on the driver's one writer thread: mirror, or handle a lost worker; the
        task's slot is free before its Future resolves."""
        token = handle.token  # a retry gives the handle a new one
        record: RunRecord | None = None
        error: BaseException | None = None
        try:
            found = self._outcome(handle, dfuture)
            if found is not None:
                record = sync(handle.task.runs_dir / found["id"])
        except BaseException as exc:
            error = exc
        finally:
            claim_path(handle.task.runs_dir, token).unlink(missing_ok=True)
            with self._lock:
                self._handles.pop(token, None)
        if error is not None and not handle.future.done():
            handle.future.set_exception(error)
        elif record is not None:
            _resolve(handle.future, record)
        if not self._closed.is_set():
            self._pump()

    def _outcome(self, handle: _Handle,
                 dfuture: distributed.Future[RunRecord]) -> RunRecord | None:
        """The attempt's record; None when the task was submitted again.

        Raises:
            WorkerLostError: the worker died before the run began.
            Exception: what ``run_task`` raised on the worker (as the thread scheduler).
        """
        try:
            record: RunRecord = dfuture.result()
            return record
        except (distributed.KilledWorker, WorkerLostError, CancelledError) as exc:
            failure: Exception = exc
        retry = (handle.task.retryable and handle.attempt <= RETRIES
                 and not handle.stop.is_set() and not self._stopping)
        claim = read_claim(claim_path(handle.task.runs_dir, handle.token))
        lost = _find_run(handle.task, claim) if claim else None
        note = (f"; retrying (attempt {handle.attempt + 1} of {RETRIES + 1})" if retry else
                "; not run again (mark the stage retryable: true to allow retries)")
        where = (f"worker {claim['worker']} (pid {claim['pid']} on {claim['host']})"
                 if claim else "its worker")
        message = (f"worker lost: {where} died while the stage ran "
                   f"({type(failure).__name__}: {failure}){note}")
        stopped = handle.stop.is_set() or self._stopping  # e.g. Ctrl-C reached the workers
        if stopped:
            message = f"stopped, and {where} ended meanwhile ({type(failure).__name__})"
        if lost is not None and lost["status"] == "running":
            abandon(RunStore(handle.task.runs_dir), lost, "killed" if stopped else "failed",
                    {"ename": "Stopped" if stopped else "WorkerLost", "evalue": str(failure),
                     "cell_index": None, "message": message})
        if retry:
            if lost is not None:
                sync(handle.task.runs_dir / lost["id"])
            handle.attempt += 1
            self._launch(handle)  # the old token is released by _settle
            return None
        if lost is None:
            raise WorkerLostError(message.replace("while the stage ran", "before the run "
                                                  "began"))
        return lost


def _resolve(future: Future[RunRecord], record: RunRecord) -> None:
    try:
        future.set_result(record)
    except InvalidStateError:  # cancelled by the caller meanwhile
        pass


def _find_run(task: StageTask, claim: Claim) -> RunRecord | None:
    """The record the claimed attempt created: same runner process and pipeline ref."""
    store = RunStore(task.runs_dir)
    found: list[RunRecord] = []
    for run_file in task.runs_dir.glob(f"*/{RUN_FILE}"):
        try:
            if run_file.stat().st_mtime < claim["started"] - 5:
                continue
            raw = json.loads(run_file.read_text())
            runner = raw.get("runner") or {}
            if (runner.get("pid") == claim["pid"] and runner.get("host") == claim["host"]
                    and raw.get("pipeline") == task.pipeline):
                found.append(store.read(run_file.parent.name))
        except (OSError, ValueError, NbopsError):
            continue
    return max(found, key=lambda r: r["started_at"]) if found else None


def _driver_probe(folder: Path) -> Path:
    """A file only a worker sharing this filesystem can see."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".nbops-probe-{uuid.uuid4().hex}"
    probe.write_text(socket.gethostname())
    return probe


def _path_problems(answers: dict[str, Any]) -> list[str]:
    problems = []
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            problems.append(f"worker {worker}: cannot check paths ({answer})")
        else:
            problems.extend(f"worker {worker}: {p}" for p in answer)
    return problems
