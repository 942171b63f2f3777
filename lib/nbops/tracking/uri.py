"""Which tracking store a run goes to. Standard library only (the in-kernel API uses it)."""

from __future__ import annotations

import os
from pathlib import Path

from ..util import envvars

NO_TRACKING = "none"  # --tracking-uri none: records only, no mirror


def default_uri(runs_dir: Path) -> str:
    """The embedded default: a SQLite store inside the runs folder."""
    return f"sqlite:///{runs_dir / 'mlflow.db'}"


def resolve_uri(option: str | None, runs_dir: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the runs folder."""
    return option or os.environ.get(envvars.TRACKING_URI) or default_uri(runs_dir)


def current_uri() -> str:
    """The store of the run this process records into: ``$MLFLOW_TRACKING_URI``, else the
    SQLite store of the run's runs folder (``$NBOPS_RUN_DIR``'s parent, or the runs dir)."""
    if os.environ.get(envvars.TRACKING_URI):
        return os.environ[envvars.TRACKING_URI]
    return default_uri(envvars.current_runs_dir())
