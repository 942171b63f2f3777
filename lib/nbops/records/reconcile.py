"""Reconciling records whose runner is gone.

A record left ``running`` by a runner that no longer exists (SIGKILL, power loss) is marked
``killed`` the next time the store is read, its orphaned kernel is killed, and its tracked
run is set to KILLED.
"""

from __future__ import annotations

import socket

from ..util.envvars import RUN_DIR
from ..util.process import kill_process_tree, marked, process_alive
from .lifecycle import finalize
from .mirror import sync
from .store import RunStore
from .types import RunError, RunRecord, Status


def reconcile(store: RunStore, record: RunRecord) -> RunRecord:
    """Mark a ``running`` record whose runner is gone as ``killed``."""
    runner = record["runner"]
    if record["status"] != "running" or runner.get("host") not in (None, "", socket.gethostname()):
        return record  # finished, or on another machine whose processes we cannot see
    if process_alive(int(runner.get("pid", 0) or 0), runner.get("proc_start")):
        return record
    message = f"runner process {runner.get('pid')} ended without finishing the run (killed)"
    abandon(store, record, "killed", {"ename": "RunnerDied", "evalue": "", "cell_index": None,
                                      "message": message})
    return sync(store.path(record["id"]))


def abandon(store: RunStore, record: RunRecord, status: Status, error: RunError) -> None:
    """End a ``running`` record whose runner is gone: kill its kernel's process tree when
    the kernel runs on this host (elsewhere we cannot see it), and whatever still runs with
    the run's folder in its environment (a kernel whose runner died exits by itself and its
    children go to init, out of its tree), then finalize the record."""
    runner = record["runner"]
    if runner.get("host") in (None, "", socket.gethostname()):
        kill_process_tree(runner.get("kernel_pid"), runner.get("kernel_start"))
        for pid in marked(RUN_DIR, str(store.path(record["id"]))):
            kill_process_tree(pid)
    finalize(store, record, status, error)
