"""The drift report as HTML: a static page (no JavaScript, no network) and the pieces the
widget shows, so the page and the widget tell the same story.

Pieces: the verdict header with the policy's tier bands drawn and the measured value
marked (:func:`header_html`), and one aligned table row per column (:func:`table_html`):
role, kind, why it drifted, test, adjusted p-value (labelled with its method), effect size
beside the threshold it was compared with, missing share and what is new. Drifted rows are
highlighted. Display only: everything comes from the report's plain data.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import DriftColumn, DriftReport

COLOURS = {"none": "#2a7d2a", "warn": "#b58900", "retrain": "#d2691e", "experiment": "#c0392b"}
MAX_PLOTS = 12  # plots embedded in the static page: drifted columns (else the top 3)
STYLE = (
    ".nbops-drift{font-family:system-ui,sans-serif;font-size:13px}"
    ".nbops-drift table{border-collapse:collapse}"
    "table.nbops-drift th,table.nbops-drift td{padding:2px 10px;line-height:1.3;"
    "text-align:left;border-bottom:1px solid #ddd;white-space:nowrap}"
    "table.nbops-drift td.num,table.nbops-drift th.num{text-align:right;"
    "font-variant-numeric:tabular-nums}"
    "table.nbops-drift tr.drifted td{background:#fde2e1;font-weight:600}"
    ".nbops-drift .reason{display:inline-block;margin-right:4px;padding:0 5px;"
    "border-radius:3px;background:#c0392b;color:#fff;font-size:11px;font-weight:400}"
    ".nbops-drift .muted{color:#777;font-weight:400}")

SORTS: dict[str, Callable[[str, DriftColumn], Any]] = {
    "drift first": lambda n, c: (not c["drift"], -c["effect_size"]),
    "column": lambda n, c: n,
    "p-value": lambda n, c: c["p_value"],
    "effect size": lambda n, c: -c["effect_size"],
}


def render(report: DriftReport) -> str:
    """The whole static page, with plots of the drifted columns embedded as PNG."""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>nbops drift report</title><style>{STYLE}figure{{display:inline-block;"
            "margin:4px}</style></head><body class='nbops-drift'>"
            f"<h1>Drift report: action <span style='color:{COLOURS.get(report.action, '#000')}'>"
            f"{escape(report.action)}</span></h1>{header_html(report, title=False)}"
            f"{table_html(report)}<h2>Columns</h2>{_figures(report)}</body></html>")


def fragment(report: DriftReport) -> str:
    """The same report as an HTML fragment for a notebook output (no page, no script)."""
    return (f"<div class='nbops-drift-static'><style>{STYLE}</style>{header_html(report)}"
            f"{table_html(report)}{_figures(report)}</div>")


def _figures(report: DriftReport) -> str:
    from .plots import column_plot_png

    ordered = [n for n, c in sorted(report.columns.items(),
                                    key=lambda i: SORTS["drift first"](*i)) if c.get("histogram")]
    drifted = [n for n in ordered if report.columns[n]["drift"]]
    plotted = (drifted or ordered[:3])[:MAX_PLOTS]
    return "".join(
        f"<figure style='display:inline-block;margin:4px'><img alt='{escape(n)}' "
        f"src='data:image/png;base64,"
        f"{base64.b64encode(column_plot_png(n, report.columns[n])).decode()}'></figure>"
        for n in plotted)


def header_html(report: DriftReport, title: bool = True) -> str:
    """Verdict, policy measure, tier bands with the measured value, notes and schema."""
    colour = COLOURS.get(report.action, "#000")
    head = (f"<h3 style='margin:0'>Drift: <span style='color:{colour}'>"
            f"{escape(report.action)}</span></h3>" if title else "")
    schema = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}"
                       for k, v in report.schema.items() if v)
    notes = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
    return (f"<div class='nbops-drift'>{head}<div>{report.share_drifted:.1%} of features "
            f"drifted; policy measure: {escape(report.measure)} = "
            f"<b>{report.measured_value:.4g}</b>; {report.n_reference:,} reference vs "
            f"{report.n_current:,} current rows; statistics: {escape(report.summaries)}</div>"
            f"{bands_svg(report)}"
            + (f"<div>Schema changes: {escape(schema)}</div>" if schema else "")
            + (f"<ul style='margin:4px 0'>{notes}</ul>" if notes else "") + "</div>")


def bands_svg(report: DriftReport, width: int = 520) -> str:
    """The policy's tiers as coloured bands with the measured value marked."""
    top = max(0.2, report.measured_value * 1.2, report.policy.experiment_above * 1.5)
    bands = report.policy.bands(top)

    def x(value: float) -> float:
        return 10 + (width - 20) * min(value, top) / top

    rects = "".join(
        f"<rect x='{x(lo):.1f}' y='14' width='{x(hi) - x(lo):.1f}' height='14' "
        f"fill='{COLOURS[action]}' opacity='0.35'><title>{action}: {lo:.0%} to {hi:.0%}"
        f"</title></rect><text x='{(x(lo) + x(hi)) / 2:.1f}' y='42' font-size='10' "
        f"text-anchor='middle'>{action}</text>" for lo, hi, action in bands)
    ticks = "".join(f"<text x='{x(v):.1f}' y='10' font-size='9' text-anchor='middle'>"
                    f"{v:.0%}</text>" for v in sorted({lo for lo, _, _ in bands} | {top}))
    mark = x(report.measured_value)
    return (f"<svg class='nbops-drift-bands' width='{width}' height='48' role='img' "
            f"aria-label='policy tiers'>{rects}{ticks}<line x1='{mark:.1f}' x2='{mark:.1f}' "
            "y1='11' y2='31' stroke='#000' stroke-width='2'/></svg>")


def table_html(report: DriftReport, sort_by: str = "drift first") -> str:
    """One aligned row per column; drifted rows highlighted."""
    key = SORTS[sort_by]
    rows = "".join(_row(n, c) for n, c in sorted(report.columns.items(),
                                                 key=lambda item: key(*item)))
    method = "BH" if report.multiplicity.startswith("benjamini") else "Bonferroni"
    return ("<table class='nbops-drift nbops-drift-table'><tr><th>column</th><th>role</th>"
            "<th>kind</th><th>drift</th><th>test</th>"
            f"<th class='num'>p (adjusted, {method})</th><th class='num'>effect</th>"
            "<th class='num'>threshold</th><th class='num'>missing ref → cur</th>"
            f"<th>new / changed</th></tr>{rows}</table>")


def _row(name: str, col: DriftColumn) -> str:
    missing = col["missing"]
    reasons = "".join(f"<span class='reason'>{escape(r)}</span>"
                      for r in col.get("reasons", []))
    if not reasons:
        reasons = "<span class='muted'>tiny change</span>" if col["significant_only"] else ""
    tested = col["test"] != "none"
    css = "nbops-drift-row drifted" if col["drift"] else "nbops-drift-row"
    return (f"<tr class='{css}'><td>{escape(name)}</td><td>{col['role']}</td>"
            f"<td>{col['kind']}</td><td>{reasons}</td><td>{col['test']}</td>"
            f"<td class='num'>{_num(col['p_value'], tested)}</td>"
            f"<td class='num'>{_num(col['effect_size'], tested)}</td>"
            f"<td class='num'>{_num(col.get('threshold', 0.0), tested)}</td>"
            f"<td class='num'>{missing['reference']:.1%} → {missing['current']:.1%}</td>"
            f"<td>{escape(changed(col))}</td></tr>")


def _num(value: float, shown: bool) -> str:
    return f"{value:.3g}" if shown else "<span class='muted'>–</span>"


def changed(col: DriftColumn) -> str:
    """What is new or gone in a column, in a few words (levels, words, time range)."""
    parts = []
    if col["unseen_levels"]:
        parts.append("new: " + ", ".join(f"{k} ({v:.1%})"
                                         for k, v in list(col["unseen_levels"].items())[:4]))
    if col["vanished_levels"]:
        parts.append("gone: " + ", ".join(col["vanished_levels"][:4]))
    text = col.get("text")
    if text and text["new_tokens"]:
        parts.append("new words: " + ", ".join(list(text["new_tokens"])[:5]))
    if text and text["vanished_tokens"]:
        parts.append("gone words: " + ", ".join(list(text["vanished_tokens"])[:5]))
    times = col.get("time_range")
    if times and times.get("reference") and times.get("current"):
        parts.append(f"{times['reference'][0][:10]}..{times['reference'][1][:10]} → "
                     f"{times['current'][0][:10]}..{times['current'][1][:10]}")
    if any(w.startswith("not tested") for w in col["warnings"]):
        parts.append(next(w for w in col["warnings"] if w.startswith("not tested")))
    return "; ".join(parts)
