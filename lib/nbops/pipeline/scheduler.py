"""Schedulers run stage tasks concurrently; the pipeline run only submits and collects.

A scheduler is anything with ``submit(task, stop) -> Future`` and ``shutdown(cancel)``.
``threads`` (a thread pool sized to ``--jobs``) is built in; a distributed scheduler plugs
in by name through the ``nbops.schedulers`` entry-point group (a callable taking the job
count). Tasks are :class:`~nbops.pipeline.task.StageTask` data, so a scheduler may ship
them to other processes or machines.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ..errors import UsageError
from ..records.types import RunRecord
from ..util.registry import Registry
from .task import StageTask, run_task

DEFAULT_SCHEDULER = "threads"


class Scheduler(Protocol):
    """Runs stage tasks; at most ``jobs`` at a time."""

    jobs: int

    def submit(self, task: StageTask, stop: threading.Event) -> Future[RunRecord]:
        """Start ``task``; ``stop`` is set when the pipeline is interrupted."""

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for running tasks (or cancel pending ones) and release workers."""


class ThreadScheduler:
    """Stage tasks in a thread pool of this process (kernels are separate processes)."""

    in_process = True  # kernels start in this process: an executor may warm them ahead

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)
        self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="nbops-stage")

    def submit(self, task: StageTask, stop: threading.Event) -> Future[RunRecord]:
        return self._pool.submit(run_task, task, stop)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)


SCHEDULERS: Registry[Scheduler] = Registry("scheduler", "nbops.schedulers")
SCHEDULERS.register(DEFAULT_SCHEDULER, ThreadScheduler)


def open_scheduler(jobs: int, dask: str | None = None) -> Scheduler:
    """The scheduler a command asked for: ``--dask ADDRESS|local:N`` when given, else a
    thread pool of ``jobs`` threads.

    Raises:
        UsageError: ``--dask`` cannot be honoured (not installed here, unreachable, ...).
    """
    if dask is not None:
        raise UsageError("--dask is not available yet in this build")
    return get_scheduler(DEFAULT_SCHEDULER, jobs)


def get_scheduler(name: str, jobs: int) -> Scheduler:
    """A scheduler of the kind registered as ``name``.

    Raises:
        UnknownNameError: no such scheduler (the message lists the known ones).
    """
    return SCHEDULERS.get(name)(jobs)
