"""Executors by name: ``--executor NAME``; plugins add theirs through the ``nbops.executors``
entry-point group (a callable with no arguments returning an ``Executor``)."""

from __future__ import annotations

from ..util.registry import Registry
from .base import Executor

DEFAULT_EXECUTOR = "papermill"


def _papermill() -> Executor:
    from .papermill import PapermillExecutor

    return PapermillExecutor()


EXECUTORS: Registry[Executor] = Registry("executor", "nbops.executors")
EXECUTORS.register(DEFAULT_EXECUTOR, _papermill)


def get_executor(name: str = DEFAULT_EXECUTOR) -> Executor:
    """A new executor of the kind registered as ``name``.

    Raises:
        UnknownNameError: no such executor (the message lists the known ones).
    """
    return EXECUTORS.get(name)()
