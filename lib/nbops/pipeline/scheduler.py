"""Schedulers run stage tasks concurrently; the pipeline run only submits and collects.

A scheduler is anything with ``submit(task, stop) -> Future`` and ``shutdown(cancel)``.
``threads`` (a thread pool sized to ``--jobs``) is built in; a distributed scheduler plugs
in by name through the ``nbops.schedulers`` entry-point group (a callable taking the job
count). Tasks are :class:`~nbops.pipeline.task.StageTask` data, so a scheduler may ship
them to other processes or machines.

``dask`` (``--dask ADDRESS|local:N``, :mod:`nbops.pipeline.dask`) is registered here too
but imported only when used, so ``distributed`` stays an optional extra. Whatever the
scheduler, the Future of a submitted task yields the task's final, mirrored record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from ..errors import MissingDependencyError
from ..records.types import RunRecord
from ..util.registry import Registry
from .address import parse_dask
from .task import StageTask, run_task

DEFAULT_SCHEDULER = "threads"
DASK_SCHEDULER = "dask"


class Scheduler(Protocol):
    """Runs stage tasks; at most ``jobs`` at a time."""

    jobs: int

    def submit(self, task: StageTask, stop: threading.Event) -> Future[RunRecord]:
        """Start ``task``; ``stop`` is set when the pipeline is interrupted."""

    def shutdown(self, cancel: bool = False) -> None:
        """Wait for running tasks (or cancel pending ones) and release workers."""

    def check_paths(self, readable: Iterable[Path], writable: Iterable[Path]) -> None:
        """Raise UsageError unless every worker sees ``readable`` and can write ``writable``
        (call before the first submit)."""


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

    def check_paths(self, readable: Iterable[Path], writable: Iterable[Path]) -> None:
        """Threads of this process see what this process sees: nothing to check."""


def _dask_scheduler(jobs: int | None, address: str | None = None) -> Scheduler:
    """The ``dask`` factory: ``address`` (default ``local:<jobs or 2>``); imported lazily."""
    target = parse_dask(address or f"local:{jobs or 2}")
    try:
        from .dask import open_dask
    except ImportError as exc:
        if exc.name not in ("dask", "distributed"):
            raise
        raise MissingDependencyError("distributed", "dask") from None
    return open_dask(target, jobs)


SCHEDULERS: Registry[Scheduler] = Registry("scheduler", "nbops.schedulers")
SCHEDULERS.register(DEFAULT_SCHEDULER, ThreadScheduler)
SCHEDULERS.register(DASK_SCHEDULER, _dask_scheduler)


def open_scheduler(jobs: int | None, dask: str | None = None) -> Scheduler:
    """The scheduler a command asked for: ``--dask ADDRESS|local:N`` when given, else a
    thread pool of ``jobs`` threads (``None``: 1).

    With ``dask``, ``jobs`` caps the tasks in flight; ``None`` means one per worker thread
    of the cluster (counted when it connects). The caller must ``shutdown()`` it (this
    also closes a ``local:N`` cluster).

    Raises:
        UsageError: ``--dask`` cannot be honoured (a bad spec, ``distributed`` not
            installed, a scheduler unreachable within 10 s or without workers).
    """
    if dask is not None:
        return _dask_scheduler(jobs, dask)
    return get_scheduler(DEFAULT_SCHEDULER, jobs or 1)


def get_scheduler(name: str, jobs: int) -> Scheduler:
    """A scheduler of the kind registered as ``name``.

    Raises:
        UnknownNameError: no such scheduler (the message lists the known ones).
    """
    return SCHEDULERS.get(name)(jobs)
