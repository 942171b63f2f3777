"""The drift report as ipywidgets: the same header (verdict, tier bands) and table as the
static page (``html``), a sort selector, and a per-column plot chosen from a list.

Display only: everything shown comes from the report's plain data (including the
histogram summaries), so a stored report renders the same as a fresh one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .html import SORTS, STYLE, header_html, table_html
from .plots import column_plot_png

if TYPE_CHECKING:
    from .report import DriftReport


def build(report: DriftReport) -> Any:
    """A VBox: header, sort selector + table, column selector + plot."""
    import ipywidgets as w

    header = w.HTML(f"<style>{STYLE}</style>{header_html(report)}",
                    layout=w.Layout(margin="0 0 8px 0"))
    header.add_class("nbops-drift-header")
    sort = w.Dropdown(options=list(SORTS), value="drift first", description="Sort by")
    table = w.HTML(table_html(report, "drift first"))
    table.add_class("nbops-drift-table")
    sort.observe(lambda change: setattr(table, "value", table_html(report, change["new"])),
                 names="value")
    ordered = sorted(report.columns.items(), key=lambda item: SORTS["drift first"](*item))
    names = [n for n, c in ordered if c.get("histogram")]
    chooser = w.Dropdown(options=names, value=names[0] if names else None, description="Column")
    plot = w.Output(layout=w.Layout(min_height="260px"))
    plot.add_class("nbops-drift-plot")

    def draw(change: dict[str, Any] | None = None) -> None:
        from IPython.display import Image

        plot.outputs = ()
        if chooser.value:  # a PNG as display data: works in a kernel and in stored state
            plot.append_display_data(Image(column_plot_png(chooser.value,
                                                           report.columns[chooser.value])))

    chooser.observe(draw, names="value")
    draw()
    box = w.VBox([header, sort, table, chooser, plot])
    box.add_class("nbops-drift-report")
    return box
