"""The drift report as ipywidgets: header, sortable column table, per-column plot.

Display only: everything shown comes from the report's plain data (including the
histogram summaries), so a stored report renders the same as a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import DriftColumn, DriftReport

SORT_KEYS: dict[str, Callable[[str, DriftColumn], Any]] = {
    "column": lambda n, c: n,
    "p-value": lambda n, c: c["p_value"],
    "effect size": lambda n, c: -c["effect_size"],
    "drift first": lambda n, c: (not c["drift"], -c["effect_size"]),
}


def build(report: DriftReport) -> Any:
    """A VBox: header, sort selector + table, column selector + plot."""
    import ipywidgets as w

    header = w.HTML(_header(report), layout=w.Layout(margin="0 0 8px 0"))
    header.add_class("nbops-drift-header")
    sort = w.Dropdown(options=list(SORT_KEYS), value="drift first", description="Sort by")
    table = w.HTML(_table(report, "drift first"))
    table.add_class("nbops-drift-table")
    sort.observe(lambda change: setattr(table, "value", _table(report, change["new"])),
                 names="value")
    names = [n for n, c in report.columns.items() if c.get("histogram")]
    chooser = w.Dropdown(options=names, value=names[0] if names else None, description="Column")
    plot = w.Output(layout=w.Layout(min_height="260px"))
    plot.add_class("nbops-drift-plot")

    def draw(change: dict[str, Any] | None = None) -> None:
        from IPython.display import Image

        plot.outputs = ()
        if chooser.value:  # a PNG as display data: works in a kernel and in stored state
            plot.append_display_data(Image(_plot_png(chooser.value,
                                                     report.columns[chooser.value])))

    chooser.observe(draw, names="value")
    draw()
    box = w.VBox([header, sort, table, chooser, plot])
    box.add_class("nbops-drift-report")
    return box


def _header(report: DriftReport) -> str:
    colour = {"none": "#2a2", "warn": "#c90", "retrain": "#d60", "experiment": "#c22"}
    return (f"<h3 style='margin:0'>Drift: <span style='color:{colour.get(report.action, '#000')}'>"
            f"{escape(report.action)}</span></h3><div>{report.share_drifted:.1%} of features "
            f"drifted; {escape(report.measure)} = {report.measured_value:.4g}; "
            f"{report.n_reference} vs {report.n_current} rows</div>")


def _table(report: DriftReport, sort_by: str) -> str:
    key = SORT_KEYS[sort_by]
    rows = sorted(report.columns.items(), key=lambda item: key(*item))
    body = "".join(
        f"<tr class='nbops-drift-row'><td>{escape(n)}</td><td>{c['test']}</td>"
        f"<td>{c['statistic']:.3g}</td><td>{c['p_value']:.3g}</td>"
        f"<td>{c['effect_size']:.3g}</td>"
        f"<td>{c['missing']['current'] - c['missing']['reference']:+.1%}</td>"
        f"<td>{'DRIFT' if c['drift'] else ''}</td></tr>" for n, c in rows)
    return ("<table><tr><th>column</th><th>test</th><th>statistic</th><th>p-value</th>"
            f"<th>effect size</th><th>missing change</th><th>drift</th></tr>{body}</table>")


def _plot_png(name: str, col: DriftColumn) -> bytes:
    import io

    from matplotlib.figure import Figure

    hist = col["histogram"]
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    if hist["type"] == "bar":
        x = range(len(hist["labels"]))
        ax.bar([i - 0.2 for i in x], hist["reference"], width=0.4, label="reference")
        ax.bar([i + 0.2 for i in x], hist["current"], width=0.4, label="current")
        ax.set_xticks(list(x), hist["labels"], rotation=45, ha="right")
    elif hist["edges"]:
        edges = hist["edges"]
        ax.stairs(hist["reference"], edges, fill=True, alpha=0.5, label="reference")
        ax.stairs(hist["current"], edges, fill=True, alpha=0.5, label="current")
    ax.set_title(f"{name} ({'drift' if col['drift'] else 'no drift'})")
    ax.set_ylabel("share")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
