"""A sweep as a picture: the metric against each swept parameter (matplotlib, Agg).

Reads only the sweep record (plain data); trials without a value are left out, the
winner is drawn in another colour. Writes one PNG; nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..records.types import SweepRecord


def plot_sweep(record: SweepRecord, path: Path) -> Path:
    """Write the plot to ``path``.

    Raises:
        UsageError: no trial has a metric value to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in record["trials"] if t["value"] is not None]
    if not trials or not record["metric"]:
        raise UsageError(f"sweep {record['id']} has no metric values to plot (choose a metric "
                         "with --maximize/--minimize when sweeping)")
    names = list(record["space"]) or ["trial"]
    best = record["best"]["number"] if record["best"] else None
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        xs: list[Any] = [t["parameters"].get(name, t["number"]) if name != "trial"
                         else t["number"] for t in trials]
        labels = [x if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)
                  for x in xs]
        colours = ["tab:red" if t["number"] == best else "tab:blue" for t in trials]
        ax.scatter(labels, [t["value"] for t in trials], c=colours)
        ax.set_xlabel(name)
        ax.set_ylabel(str(record["metric"]))
        if record["space"].get(name, {}).get("log"):
            ax.set_xscale("log")
    fig.suptitle(f"sweep {record['id']} ({record['direction']} {record['metric']})",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
