"""What runs on a Dask worker: one stage task under a claim, its stop event, path probes.

Invariants: a submission runs its notebook at most once: :func:`work` first creates the
submission's claim file exclusively (``<runs>/.dask-claims/<token>.json``, on the shared
filesystem), and an attempt that finds it already there (Dask rescheduled the task after
its worker died) raises :class:`WorkerLostError` without running anything. The claim names
the worker process, so the driver can find the record a lost attempt left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TypedDict

import distributed

from ..errors import WorkerLostError
from ..records.types import RunRecord
from .task import StageTask, run_task

CLAIMS = ".dask-claims"  # folder of claim files, inside the runs folder
POLL = 0.5  # seconds between a worker's looks at its task's stop event


class Claim(TypedDict):
    """Who runs a submission: written by the worker before the notebook starts."""

    host: str
    pid: int
    worker: str
    started: float


def event_name(token: str) -> str:
    """The ``distributed.Event`` the driver sets to stop the submission ``token``."""
    return f"nbops-stop-{token}"


def claim_path(runs_dir: Path, token: str) -> Path:
    """The claim file of the submission ``token``."""
    return runs_dir / CLAIMS / f"{token}.json"


def read_claim(path: Path) -> Claim | None:
    """The claim, or None when no attempt got as far as writing it."""
    try:
        data: Claim = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def probe_paths(wanted: list[tuple[str, bool]], probes: dict[str, Path]) -> list[str]:
    """On a worker: the paths it does not see (or cannot write), as messages."""
    problems = []
    for path, write in wanted:
        if not os.path.exists(path):
            problems.append(f"{path} does not exist there")
        elif write and not probes[path].exists():
            problems.append(f"{path} is another folder there (the driver's files are not in "
                            "it)")
        elif write:
            mine = Path(path) / f".nbops-probe-{uuid.uuid4().hex}"
            try:
                mine.write_text("")
                mine.unlink()
            except OSError as exc:
                problems.append(f"{path} is not writable there ({exc.strerror})")
    return problems


def dask_setup(worker: distributed.Worker) -> None:
    """Preloaded in each worker process of a ``local:N`` cluster: Ctrl-C in the terminal
    reaches the whole process group, but it is the driver's to handle (it stops the runs
    through their stop events, then closes the cluster); a worker dying of it would turn
    stopped runs into lost ones."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave the default
        pass


def work(task: StageTask, token: str) -> RunRecord:
    """On a worker: claim the submission, run it, honour its stop event.

    Raises:
        WorkerLostError: the submission was claimed before (Dask rescheduled it after the
            worker that ran it died): the notebook is not run again.
    """
    path = claim_path(task.runs_dir, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    worker = distributed.get_worker()
    claim: Claim = {"host": socket.gethostname(), "pid": os.getpid(),
                    "worker": str(worker.address), "started": time.time()}
    try:
        with open(path, "x", encoding="utf-8") as out:
            json.dump(claim, out)
    except FileExistsError:
        raise WorkerLostError(f"stage '{task.stage}' was started before by a worker that "
                              "died; Dask rescheduled it, nbops does not run it again") from None
    stop, done = threading.Event(), threading.Event()
    remote = distributed.Event(event_name(token), client=distributed.get_client())
    poller = threading.Thread(target=poll_stop, args=(remote, stop, done), daemon=True)
    poller.start()
    try:
        return run_task(task, stop)
    finally:
        done.set()


def poll_stop(remote: distributed.Event, stop: threading.Event,
               done: threading.Event) -> None:
    while not done.is_set():
        try:
            if remote.wait(timeout=POLL):
                stop.set()
                return
        except Exception:  # scheduler briefly unreachable: the run goes on
            time.sleep(POLL)
