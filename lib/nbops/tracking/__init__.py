"""Tracking: run records mirrored to a tracking backend, and the model registry.

- ``base``: the :class:`~nbops.tracking.base.Tracker` protocol, the no-op tracker, trackers
  by URI (``open_tracker``), and a tracker opened in the background;
- ``mlflow``: the MLflow tracker (SQLite in the runs folder by default, or a server);
- ``registry``: the model registry as library functions: register, promote, roll back;
- ``uri``: which store a run goes to (standard library only).

Invariant: the run record on disk is the source of truth; a tracking failure is a warning,
never a failed run. Importing this package imports nothing heavy (MLflow loads on use).
"""
