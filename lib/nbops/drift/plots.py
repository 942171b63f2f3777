"""Static plots of drift data (display only: they draw what ``detect`` and ``history``
computed): one plot per column suited to its kind, and drift over time with the policy's
tier bands."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .history import DriftPoint
    from .report import DriftColumn, Policy

BAND_COLOURS = {"none": "tab:green", "warn": "gold", "retrain": "tab:orange",
                "experiment": "tab:red"}


def column_plot_png(name: str, col: DriftColumn) -> bytes:
    """PNG for one column: overlaid histograms (numeric, datetime), bars with new and
    vanished levels marked (categorical), the words that appeared and vanished (text)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    text = col.get("text")
    if text and (text["new_tokens"] or text["vanished_tokens"]):
        _tokens(ax, text["new_tokens"], text["vanished_tokens"])
    elif col["histogram"]["type"] == "bar":
        _bars(ax, col)
    elif col["histogram"].get("edges"):
        hist = col["histogram"]
        ax.stairs(hist["reference"], hist["edges"], fill=True, alpha=0.45, label="reference")
        ax.stairs(hist["current"], hist["edges"], fill=True, alpha=0.45, label="current")
        ax.set_ylabel("share of rows")
        ax.set_xlabel("length (characters)" if col["kind"] == "text" else name)
        ax.legend()
    verdict = ("drift: " + ", ".join(col.get("reasons", []))) if col["drift"] else "no drift"
    ax.set_title(f"{name} ({col['kind']}): {verdict}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _bars(ax: Any, col: DriftColumn) -> None:
    hist = col["histogram"]
    new, gone = set(col["unseen_levels"]), set(col["vanished_levels"])
    labels = [f"{lv} (new)" if lv in new else f"{lv} (gone)" if lv in gone else str(lv)
              for lv in hist["labels"]]
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], hist["reference"], width=0.4, label="reference")
    bars = ax.bar([i + 0.2 for i in x], hist["current"], width=0.4, label="current")
    for bar, level in zip(bars, hist["labels"], strict=True):
        if level in new:
            bar.set_hatch("//")
    ax.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of rows")
    ax.legend()


def _tokens(ax: Any, new: dict[str, float], gone: dict[str, float]) -> None:
    items = [(f"+ {w}", share) for w, share in list(new.items())[:8]] + [
        (f"- {w}", -share) for w, share in list(gone.items())[:8]]
    ax.barh([w for w, _ in items][::-1], [v for _, v in items][::-1],
            color=["tab:red" if v > 0 else "tab:blue" for _, v in items][::-1])
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("share of words: new in current (+) / vanished from reference (-)")


def plot_drift_history(rows: list[DriftPoint], path: Path, policy: Policy) -> None:
    """PNG: share of drifted features over time, points coloured by action, over the
    policy's tier bands."""
    fig = history_figure(rows, policy)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def history_figure(rows: list[DriftPoint], policy: Policy) -> Any:
    """The figure ``plot_drift_history`` saves (one shaded band per policy tier)."""
    from matplotlib.figure import Figure

    colours = {"none": "tab:green", "warn": "tab:olive", "retrain": "tab:orange",
               "experiment": "tab:red"}
    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    top = max([0.2, *(r["share_drifted"] * 1.1 for r in rows)])
    for low, high, action in policy.bands(top):
        ax.axhspan(low, high, color=BAND_COLOURS[action], alpha=0.12, lw=0)
        ax.text(1.01, (low + high) / 2, action, transform=ax.get_yaxis_transform(),
                fontsize=7, va="center")
    ax.set_ylim(0, top)
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
    return fig
