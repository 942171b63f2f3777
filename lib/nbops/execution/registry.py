"""Executors by name: ``--executor NAME`` (``papermill``: a new kernel per run; ``pool``:
warm kernels with imports preloaded, still one process per run; ``reuse``: one warm kernel
per job reused run after run); plugins add theirs through the ``nbops.executors``
entry-point group (a callable with no arguments returning an ``Executor``)."""

from __future__ import annotations

from ..util.registry import Registry
from .base import Executor

DEFAULT_EXECUTOR = "papermill"


def _papermill() -> Executor:
    from .papermill import PapermillExecutor

    return PapermillExecutor()


def _pool() -> Executor:
    from .pool import PoolExecutor

    return PoolExecutor(reuse=False)


def _reuse() -> Executor:
    from .pool import PoolExecutor

    return PoolExecutor(reuse=True)


EXECUTORS: Registry[Executor] = Registry("executor", "nbops.executors")
EXECUTORS.register(DEFAULT_EXECUTOR, _papermill)
EXECUTORS.register("pool", _pool)  # warm kernels, a fresh process per run
EXECUTORS.register("reuse", _reuse)  # one warm kernel per job, namespace reset between runs


def get_executor(name: str = DEFAULT_EXECUTOR) -> Executor:
    """A new executor of the kind registered as ``name``.

    Raises:
        UnknownNameError: no such executor (the message lists the known ones).
    """
    return EXECUTORS.get(name)()
