"""nbops: parameterized notebooks as reliable, recorded, monitored pipelines.

Inside a notebook: ``nbops.log_metric``, ``log_params``, ``log_artifact``, ``log_figure``,
``log_model``, ``output``, ``secret`` (``Secret`` declares one), and by hand ``end_run``
(ends the hand run and mirrors it). From Python:
``nbops.run``, ``nbops.run_pipeline``, ``nbops.load_run``, ``nbops.list_runs`` and
``nbops.load_model``. Importing nbops is cheap:
the recording API uses only the standard library, and everything else (papermill, MLflow)
is imported on first use.

Package map (dependencies point down only; no cycles, function-local imports included):

- ``cli``: the command line (parses, delegates, formats);
- ``audit``: the audit trail of a model version, from data hashes to traffic served;
- ``loop``: the closed loop (policy, decisions under limits, ticks, cycle records);
- ``sweep``: sweeps and hyperparameter search (grid, random, Optuna) over a template;
- ``pipeline``: pipeline.yaml, cache, stage tasks, schedulers;
- ``runner``: one template end to end (contract → record → execution → tracking);
- ``execution``: executors (papermill engine), outcome derivation;
- ``records``: the run store, record lifecycle, integrity, queries, reconcile, schemas;
- ``tracking``: the tracker protocol, MLflow, the model registry;
- ``contract``: templates, parameter types, parameters;
- ``drift``: drift statistics as data, rendered as HTML / widgets / plots;
- ``kernel_api``: the in-notebook recording API; ``models``, ``datasets``, ``torch_models``:
  helpers for templates; ``util``, ``errors``: the bottom layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .kernel_api import (
    Secret,
    current_run_id,
    end_run,
    log_artifact,
    log_figure,
    log_metric,
    log_model,
    log_params,
    output,
    secret,
    tracking_uri,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .records.queries import list_records as list_runs
    from .records.queries import load_model, load_run, tracked_run_id
    from .runner import run
    from .sweep.stage import run_pipeline_with_sweeps as run_pipeline

__all__ = [
    "Secret", "current_run_id", "end_run", "list_runs", "load_model", "load_run", "log_artifact",
    "log_figure", "log_metric", "log_model", "log_params", "output", "run", "run_pipeline",
    "secret", "tracked_run_id", "tracking_uri",
]


def __getattr__(name: str) -> Any:
    if name == "run":
        from .runner import run as _run

        return _run
    if name == "run_pipeline":  # the pipeline run that can also run ``sweep:`` stages
        from .sweep.stage import run_pipeline_with_sweeps

        return run_pipeline_with_sweeps
    if name in ("load_run", "load_model", "list_runs", "tracked_run_id"):
        from .records import queries

        return getattr(queries, "list_records" if name == "list_runs" else name)
    raise AttributeError(f"module 'nbops' has no attribute {name!r}")
