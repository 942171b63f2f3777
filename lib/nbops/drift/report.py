"""The drift report as plain data, its JSON form and a static HTML rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

SCHEMA = "nbops.drift/1"


@dataclass
class Policy:
    """Maps the measured value (share of drifted features or performance drop) to an action.

    Below ``none_below``: ``none``; within [``retrain_from``, ``retrain_to``]: ``retrain``;
    above ``experiment_above``: ``experiment``; anything between tiers: ``warn``.
    """

    none_below: float = 0.02
    retrain_from: float = 0.05
    retrain_to: float = 0.08
    experiment_above: float = 0.10

    def action(self, value: float) -> str:
        if value < self.none_below:
            return "none"
        if self.retrain_from <= value <= self.retrain_to:
            return "retrain"
        if value > self.experiment_above:
            return "experiment"
        return "warn"

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class DriftReport:
    """Everything :func:`nbops.drift.compare` found; ``to_dict()`` is the JSON form."""

    columns: dict[str, dict[str, Any]]
    schema: dict[str, list[str]]
    share_drifted: float
    prediction_drift: dict[str, Any] | None
    target_drift: dict[str, Any] | None
    performance: dict[str, Any] | None
    action: str
    measure: str
    measured_value: float
    multiplicity: str
    policy: Policy
    n_reference: int
    n_current: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA, "columns": self.columns, "schema": self.schema,
                "share_drifted": self.share_drifted, "prediction_drift": self.prediction_drift,
                "target_drift": self.target_drift, "performance": self.performance,
                "action": self.action, "measure": self.measure,
                "measured_value": self.measured_value, "multiplicity": self.multiplicity,
                "policy": self.policy.to_dict(), "n_reference": self.n_reference,
                "n_current": self.n_current, "warnings": self.warnings}

    @property
    def drifted(self) -> list[str]:
        return [n for n, c in self.columns.items() if c["drift"] and c["role"] == "feature"]

    def to_widget(self) -> Any:
        """An ipywidgets view (header, sortable table, per-column plot)."""
        from .widget import build

        return build(self)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.to_widget())

    def to_html(self) -> str:
        """Static HTML: no JavaScript, no network, small."""
        rows = "".join(_row(name, col) for name, col in self.columns.items())
        notes = "".join(f"<li>{escape(w)}</li>" for w in self.warnings)
        schema = "; ".join(f"{k}: {', '.join(v)}" for k, v in self.schema.items() if v)
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>nbops drift report</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
            ".drift{background:#fdd}</style></head><body>"
            f"<h1>Drift report: action <b>{escape(self.action)}</b></h1>"
            f"<p>{self.share_drifted:.1%} of features drifted; policy measure: "
            f"{escape(self.measure)} = {self.measured_value:.4g}; multiplicity: "
            f"{escape(self.multiplicity)}; rows: {self.n_reference} reference, "
            f"{self.n_current} current.</p>"
            + (f"<p>Schema changes: {escape(schema)}</p>" if schema else "")
            + (f"<ul>{notes}</ul>" if notes else "")
            + "<table><tr><th>column</th><th>kind</th><th>role</th><th>test</th>"
            "<th>statistic</th><th>p (adj.)</th><th>effect</th><th>PSI</th>"
            "<th>missing ref → cur</th><th>new levels</th><th>drift</th></tr>"
            f"{rows}</table></body></html>")


def _row(name: str, col: dict[str, Any]) -> str:
    missing = col["missing"]
    new = ", ".join(f"{k} ({v:.1%})" for k, v in list(col["unseen_levels"].items())[:5])
    css = " class='drift'" if col["drift"] else ""
    return (f"<tr{css}><td>{escape(name)}</td><td>{col['kind']}</td><td>{col['role']}</td>"
            f"<td>{col['test']}</td><td>{col['statistic']:.4g}</td><td>{col['p_value']:.3g}</td>"
            f"<td>{col['effect_size']:.4g}</td><td>{col['psi']:.4g}</td>"
            f"<td>{missing['reference']:.1%} → {missing['current']:.1%}</td>"
            f"<td>{escape(new)}</td><td>{'DRIFT' if col['drift'] else ''}</td></tr>")
