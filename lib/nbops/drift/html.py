"""The drift report as a static HTML page: no JavaScript, no network, small."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import DriftColumn, DriftReport


def render(report: DriftReport) -> str:
    """The whole page."""
    rows = "".join(_row(name, col) for name, col in report.columns.items())
    notes = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
    schema = "; ".join(f"{k}: {', '.join(v)}" for k, v in report.schema.items() if v)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>nbops drift report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        ".drift{background:#fdd}</style></head><body>"
        f"<h1>Drift report: action <b>{escape(report.action)}</b></h1>"
        f"<p>{report.share_drifted:.1%} of features drifted; policy measure: "
        f"{escape(report.measure)} = {report.measured_value:.4g}; multiplicity: "
        f"{escape(report.multiplicity)}; rows: {report.n_reference} reference, "
        f"{report.n_current} current.</p>"
        + (f"<p>Schema changes: {escape(schema)}</p>" if schema else "")
        + (f"<ul>{notes}</ul>" if notes else "")
        + "<table><tr><th>column</th><th>kind</th><th>role</th><th>test</th>"
        "<th>statistic</th><th>p (adj.)</th><th>effect</th><th>PSI</th>"
        "<th>missing ref → cur</th><th>new levels</th><th>drift</th></tr>"
        f"{rows}</table></body></html>")


def _row(name: str, col: DriftColumn) -> str:
    missing = col["missing"]
    new = ", ".join(f"{k} ({v:.1%})" for k, v in list(col["unseen_levels"].items())[:5])
    css = " class='drift'" if col["drift"] else ""
    return (f"<tr{css}><td>{escape(name)}</td><td>{col['kind']}</td><td>{col['role']}</td>"
            f"<td>{col['test']}</td><td>{col['statistic']:.4g}</td><td>{col['p_value']:.3g}</td>"
            f"<td>{col['effect_size']:.4g}</td><td>{col['psi']:.4g}</td>"
            f"<td>{missing['reference']:.1%} → {missing['current']:.1%}</td>"
            f"<td>{escape(new)}</td><td>{'DRIFT' if col['drift'] else ''}</td></tr>")
