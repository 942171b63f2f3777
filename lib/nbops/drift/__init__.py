"""Drift between a reference and a current dataset, as plain data, rendered separately.

- ``detect``: :func:`compare` (the statistics and rules, documented there) → ``DriftReport``;
- ``columns``: column kinds and roles; ``stats``: two-sample statistics from sorted arrays
  or quantile sketches;
- ``summary``: mergeable per-column summaries of one side (exact values or KLL sketches);
  ``sources``: where a side comes from (a frame, a streamed Parquet/CSV file, a Dask
  DataFrame) and how it is summarised;
- ``report``: the report as plain data, its JSON form, and the policy (data only);
- ``html``, ``widget``, ``plots``: display of that data (static HTML, ipywidgets, PNG);
- ``history``: drift share and action of monitor runs over time, read from run records.

Invariant: display modules only read report data; nothing computes in them. Importing the
package is cheap: numpy and pandas load when ``compare`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .detect import compare
    from .report import SCHEMA, DriftReport, Policy

__all__ = ["SCHEMA", "DriftReport", "Policy", "compare"]


def __getattr__(name: str) -> Any:
    if name == "compare":
        from .detect import compare as _compare

        return _compare
    if name in ("SCHEMA", "DriftReport", "Policy"):
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module 'nbops.drift' has no attribute {name!r}")
