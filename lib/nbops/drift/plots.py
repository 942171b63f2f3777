"""Static plots of drift data (display only: they draw what ``history`` computed)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .history import DriftPoint


def plot_drift_history(rows: list[DriftPoint], path: Path) -> None:
    """PNG: share of drifted features over time, points coloured by action."""
    from matplotlib.figure import Figure

    colours = {"none": "tab:green", "warn": "tab:olive", "retrain": "tab:orange",
               "experiment": "tab:red"}
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    times = [datetime.fromisoformat(r["started_at"]) for r in rows]
    ax.plot(times, [r["share_drifted"] for r in rows], color="grey", lw=1)  # type: ignore[arg-type]
    for action, colour in colours.items():
        picked = [(t, r["share_drifted"]) for t, r in zip(times, rows, strict=True)
                  if r["action"] == action]
        if picked:
            ax.scatter(*zip(*picked, strict=True), color=colour, label=action, zorder=3)
    ax.set(title="drift over time", ylabel="share of drifted features")
    if rows:
        ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
