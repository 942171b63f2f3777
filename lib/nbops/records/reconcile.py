"""Reconciling records whose runner is gone.

A record left ``running`` by a runner that no longer exists (SIGKILL, power loss) is marked
``killed`` the next time the store is read, its orphaned kernel is killed, and its tracked
run is set to KILLED. Pipeline runs and loop cycles name their driver the same way
(:func:`this_driver`); their stores reconcile them on read with :func:`driver_gone`,
:func:`end_leftovers` and :func:`reconcile_runs`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Mapping
from datetime import datetime

from ..errors import RecordError
from ..util.envvars import RUN_DIR, ZYGOTE_OF
from ..util.process import kill_process_tree, marked, process_alive, process_start_time
from .lifecycle import finalize
from .mirror import sync
from .store import RunStore, utcnow
from .types import DriverInfo, RunError, RunRecord, Status


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


def this_driver() -> DriverInfo:
    """This process, as the driver of a pipeline run or a loop cycle."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "proc_start": process_start_time(os.getpid())}


def driver_gone(driver: Mapping[str, object] | None) -> bool:
    """Whether a record's driver no longer runs: False when the record names none (older
    records) or names another host (whose processes we cannot see)."""
    if not driver or driver.get("host") not in (None, "", socket.gethostname()):
        return False
    pid, start = driver.get("pid"), driver.get("proc_start")
    return not process_alive(pid if isinstance(pid, int) else 0,
                             start if isinstance(start, int) else None)


def end_leftovers(driver: Mapping[str, object]) -> None:
    """SIGKILL what a gone driver's zygotes left (a zygote ends with its driver by itself;
    this is the second line): processes marked with the driver's pid that started after
    it, and before the process that may hold its pid now."""
    pid, start = driver.get("pid"), driver.get("proc_start")
    if not isinstance(pid, int) or not isinstance(start, int):
        return
    reused = process_start_time(pid)
    for found in marked(ZYGOTE_OF, str(pid)):
        began = process_start_time(found)
        if began is None or began < start or (reused is not None and began >= reused):
            continue
        try:
            ours = os.getpgid(found) == os.getpgrp()
        except OSError:
            continue
        if ours:  # not a zygote (each leads a session of its own): never kill our group
            with contextlib.suppress(OSError):
                os.kill(found, signal.SIGKILL)
        else:
            kill_process_tree(found, began)


def reconcile_runs(store: RunStore, belongs: Callable[[RunRecord], bool]) -> dict[str, RunRecord]:
    """The run records that ``belongs`` (a gone driver's runs), the ``running`` ones
    reconciled: run id -> record as it is now."""
    found: dict[str, RunRecord] = {}
    for run_id in store.ids():
        try:
            record = store.read(run_id, full=False)
        except RecordError:
            continue
        if belongs(record):
            found[run_id] = reconcile(store, record)
    return found


def gone_message(what: str, driver: Mapping[str, object]) -> str:
    """Why a record was marked ``killed``: its driver ended without finishing it."""
    return (f"killed: its {what} (process {driver.get('pid')} on {driver.get('host')}) "
            "ended without finishing it (SIGKILL, out of memory or power loss)")


def seconds_since(started_at: str) -> float | None:
    """Seconds from an ISO time to now (None when it cannot be read)."""
    try:
        return round((datetime.fromisoformat(utcnow()) - datetime.fromisoformat(started_at))
                     .total_seconds(), 3)
    except (TypeError, ValueError):
        return None
