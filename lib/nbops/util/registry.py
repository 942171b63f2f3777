"""A small registry of named implementations, extended through entry points.

Each extension point (executors, pipeline schedulers, trackers) is one ``Registry``:
``register(name, factory)`` then ``get(name)``. Plugins declare entry points in the group
named by the registry; they are loaded lazily on the first lookup, and a broken plugin is a
warning, never a failed import. Entry-point groups:

=====================  ==============================================================
group                  what a plugin provides
=====================  ==============================================================
``nbops.executors``    a callable returning an ``nbops.execution.Executor``
``nbops.schedulers``   a callable ``(jobs: int) -> nbops.pipeline.Scheduler``
``nbops.trackers``     a callable ``(uri: str, runs_dir: Path) -> nbops.tracking.Tracker``
=====================  ==============================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Generic, TypeVar

from ..errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named factories of one kind; ``get`` names every known key when one is missing."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[..., T]] = {}
        self._loaded = False

    def register(self, name: str, factory: Callable[..., T]) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``.

        Raises:
            UnknownNameError: no such name (the message lists the known ones).
        """
        self._load_entry_points()
        if name not in self._factories:
            raise UnknownNameError(self.kind, name, self._factories)
        return self._factories[name]

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for entry in metadata.entry_points(group=self.group):
            if entry.name in self._factories:
                continue  # built-ins win over plugins of the same name
            try:
                self._factories[entry.name] = entry.load()
            except Exception as exc:  # a broken plugin must not break nbops
                warnings.warn(f"nbops: cannot load {self.kind} plugin {entry.name!r} "
                              f"({entry.value}): {type(exc).__name__}: {exc}", stacklevel=2)
