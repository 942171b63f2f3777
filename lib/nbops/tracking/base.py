"""The tracker protocol: where run records are mirrored, chosen by tracking URI.

A tracker mirrors finished run records (parameters, metrics with steps, files, models,
final status) with explicit run ids; nothing relies on a global "active run". Trackers are
looked up by URI: ``none`` gives the :class:`NoopTracker`, anything else MLflow, and a
plugin can claim a URI scheme through the ``nbops.trackers`` entry-point group.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..util.registry import Registry
from .uri import NO_TRACKING

if TYPE_CHECKING:
    from ..records.types import RunRecord, Status, TrackingInfo


class Tracker(Protocol):
    """What the runner needs from a tracking backend."""

    uri: str

    def start(self, record: RunRecord) -> TrackingInfo:
        """Create the tracked run of a record; returns the record's ``mlflow`` block."""

    def finish(self, record: RunRecord, run_dir: Path) -> None:
        """Log everything the record lists and set the final status."""

    def start_parent(self, pipeline_run_id: str, name: str, kind: str = "pipeline",
                     tags: dict[str, str] | None = None) -> str | None:
        """The parent run of a pipeline run or a sweep (``kind``), with extra ``tags``
        (None when the backend has no such notion)."""

    def finish_parent(self, run_id: str, status: Status,
                      summary: dict[str, Any] | None = None,
                      metrics: dict[str, float] | None = None) -> None:
        """End a parent run with its status, summary (tags) and metrics."""


class NoopTracker:
    """Tracks nothing: the run record alone is kept (``--tracking-uri none``)."""

    def __init__(self, uri: str = NO_TRACKING, runs_dir: Path | None = None) -> None:
        self.uri = uri

    def start(self, record: RunRecord) -> TrackingInfo:
        return {"tracking_uri": self.uri, "experiment_id": None, "run_id": None,
                "synced": False}

    def finish(self, record: RunRecord, run_dir: Path) -> None:
        return None

    def start_parent(self, pipeline_run_id: str, name: str, kind: str = "pipeline",
                     tags: dict[str, str] | None = None) -> str | None:
        return None

    def finish_parent(self, run_id: str, status: Status,
                      summary: dict[str, Any] | None = None,
                      metrics: dict[str, float] | None = None) -> None:
        return None


def _mlflow_tracker(uri: str, runs_dir: Path) -> Tracker:
    from .mlflow import MlflowTracker

    return MlflowTracker(uri, runs_dir)


TRACKERS: Registry[Tracker] = Registry("tracker", "nbops.trackers")
TRACKERS.register(NO_TRACKING, NoopTracker)
TRACKERS.register("mlflow", _mlflow_tracker)


def tracker_kind(uri: str) -> str:
    """The registry key for ``uri``: ``none``, a plugin's scheme, or ``mlflow``."""
    if uri == NO_TRACKING:
        return NO_TRACKING
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    return scheme if scheme and scheme in TRACKERS.names() else "mlflow"


def open_tracker(uri: str, runs_dir: Path) -> Tracker:
    """The tracker for ``uri`` (MLflow opens its store and experiment under a file lock)."""
    return TRACKERS.get(tracker_kind(uri))(uri, runs_dir)


class BackgroundTracker:
    """A tracker opened in a background thread (MLflow's import takes seconds) while the
    kernel runs; every call waits for it and re-raises an error from opening it."""

    def __init__(self, uri: str, runs_dir: Path) -> None:
        self.uri = uri
        self._tracker: Tracker | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(uri, runs_dir),
                                        name="nbops-tracker", daemon=True)
        self._thread.start()

    def _open(self, uri: str, runs_dir: Path) -> None:
        try:
            self._tracker = open_tracker(uri, runs_dir)
        except BaseException as exc:  # re-raised by the first call
            self._error = exc

    def _get(self) -> Tracker:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._tracker is not None
        return self._tracker

    def start(self, record: RunRecord) -> TrackingInfo:
        return self._get().start(record)

    def finish(self, record: RunRecord, run_dir: Path) -> None:
        self._get().finish(record, run_dir)

    def start_parent(self, pipeline_run_id: str, name: str, kind: str = "pipeline",
                     tags: dict[str, str] | None = None) -> str | None:
        return self._get().start_parent(pipeline_run_id, name, kind, tags)

    def finish_parent(self, run_id: str, status: Status,
                      summary: dict[str, Any] | None = None,
                      metrics: dict[str, float] | None = None) -> None:
        self._get().finish_parent(run_id, status, summary, metrics)
