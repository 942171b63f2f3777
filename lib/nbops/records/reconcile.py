"""Reconciling records whose runner is gone.

A record left ``running`` by a runner that no longer exists (SIGKILL, power loss) is marked
``killed`` the next time the store is read, its orphaned kernel is killed, and its tracked
run is set to KILLED.
"""

from __future__ import annotations

import socket

from ..util.process import kill_process_tree, process_alive
from .lifecycle import finalize
from .mirror import sync
from .store import RunStore
from .types import RunRecord


def reconcile(store: RunStore, record: RunRecord) -> RunRecord:
    """Mark a ``running`` record whose runner is gone as ``killed``."""
    runner = record["runner"]
    if record["status"] != "running" or runner.get("host") not in (None, "", socket.gethostname()):
        return record  # finished, or on another machine whose processes we cannot see
    if process_alive(int(runner.get("pid", 0) or 0), runner.get("proc_start")):
        return record
    kill_process_tree(runner.get("kernel_pid"), runner.get("kernel_start"))
    message = f"runner process {runner.get('pid')} ended without finishing the run (killed)"
    finalize(store, record, "killed", {"ename": "RunnerDied", "evalue": "", "cell_index": None,
                                       "message": message})
    return sync(store.path(record["id"]))
