"""nbops: parameterized notebooks as reliable, recorded, monitored pipelines.

Inside a notebook: ``nbops.log_metric``, ``log_params``, ``log_artifact``, ``log_figure``,
``log_model``, ``output``. From Python: ``nbops.run`` and ``nbops.load_run``. Importing
nbops is cheap: the recording API uses only the standard library, and everything else
(papermill, MLflow) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .recording import (
    current_run_id,
    end_run,
    log_artifact,
    log_figure,
    log_metric,
    log_model,
    log_params,
    output,
    tracking_uri,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .pipeline_runner import run_pipeline
    from .runner import run
    from .runs import load_model, load_run

__all__ = [
    "current_run_id", "end_run", "load_model", "load_run", "log_artifact", "log_figure",
    "log_metric", "log_model", "log_params", "output", "run", "run_pipeline", "tracking_uri",
]


def __getattr__(name: str) -> Any:
    if name == "run":
        from .runner import run as _run

        return _run
    if name == "run_pipeline":
        from .pipeline_runner import run_pipeline as _run_pipeline

        return _run_pipeline
    if name in ("load_run", "load_model"):
        from . import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'nbops' has no attribute {name!r}")
