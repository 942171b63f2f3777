"""``nbops drift [compare] REF CUR`` and ``nbops drift history``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR

_SEVERITY = {"none": 0, "warn": 1, "retrain": 2, "experiment": 3}


class _CompareByDefault(click.Group):
    """``nbops drift REF CUR`` means ``nbops drift compare REF CUR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["compare", *args]
        return super().parse_args(ctx, args)


@click.group("drift", cls=_CompareByDefault)
def drift_group() -> None:
    """Drift reports: nbops drift REFERENCE CURRENT [options] (same as 'drift compare'),
    or nbops drift history."""


@drift_group.command("compare")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("--target", default=None, help="Label column.")
@click.option("--prediction", default=None, help="Prediction column.")
@click.option("--timestamp", default=None, help="Timestamp column (reported, not a feature).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Write the static HTML report here.")
@click.option("--mode", type=click.Choice(["auto", "exact", "stream"]), default="auto",
              show_default=True,
              help="exact: load both files and compute exact statistics; stream: read them "
                   "in batches with bounded memory (numeric columns through quantile "
                   "sketches, error stated in the report); auto: exact when they fit in "
                   "memory.")
@click.option("--fail-on", type=click.Choice(["retrain", "experiment"]), default=None,
              help="Exit 3 when the action is this one or more severe (for CI gates).")
@JSON
def drift_cmd(reference: Path, current: Path, target: str | None, prediction: str | None,
              timestamp: str | None, html_out: Path | None, mode: str, fail_on: str | None,
              as_json: bool) -> None:
    """Compare REFERENCE and CURRENT (CSV or Parquet) and print the drift report."""
    from ..drift.detect import compare
    from ..errors import ConfigError
    from ..util.files import atomic_write_text

    try:
        ref, cur = _open(reference, current, mode)
        report = compare(ref, cur, target=target, prediction=prediction, timestamp=timestamp)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot compare {reference} and {current}: {exc}") from None
    if html_out is not None:
        atomic_write_text(html_out, report.to_html())
    if as_json:
        click.echo(dumps(report.to_dict()))
    else:
        _print_report(report)
    if fail_on and _SEVERITY[report.action] >= _SEVERITY[fail_on]:
        sys.exit(3)


def _print_report(report: Any) -> None:
    """The same story as the HTML report: verdict and tiers, then one aligned row per
    column with why it drifted, the adjusted p-value and the effect against its threshold."""
    from ..drift.html import changed

    click.echo(f"action: {report.action}  ({report.share_drifted:.1%} of features drifted; "
               f"{report.measure} = {report.measured_value:.4g})")
    tiers = "  ".join(f"{action} {low:.0%}-{high:.0%}"
                      for low, high, action in report.policy.bands(1.0))
    click.echo(f"policy tiers: {tiers}")
    click.echo(f"statistics: {report.summaries}; {report.n_reference:,} reference vs "
               f"{report.n_current:,} current rows")
    method = "BH" if report.multiplicity.startswith("benjamini") else "Bonferroni"
    rows = [("column", "role", "kind", "drift", f"p (adj, {method})", "effect", "threshold",
             "missing", "new / changed")]
    ordered = sorted(report.columns.items(), key=lambda i: (not i[1]["drift"],
                                                            -i[1]["effect_size"]))
    for name, col in ordered:
        tested = col["test"] != "none"
        drift = ", ".join(col["reasons"]) if col["drift"] else (
            "tiny change" if col["significant_only"] else "-")
        rows.append((name, col["role"], col["kind"], drift,
                     f"{col['p_value']:.3g}" if tested else "-",
                     f"{col['effect_size']:.3g}" if tested else "-",
                     f"{col['threshold']:.3g}" if tested else "-",
                     f"{col['missing']['reference']:.1%}->{col['missing']['current']:.1%}",
                     changed(col)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [str(v).rjust(w) if 4 <= i <= 6 else str(v).ljust(w)
                 for i, (v, w) in enumerate(zip(row, widths, strict=False))]
        click.echo("  " + "  ".join(cells + [str(row[-1])]).rstrip())
    for warning in report.warnings:
        click.echo(f"warning: {warning}")


def _open(reference: Path, current: Path, mode: str) -> tuple[Any, Any]:
    """Both sides as frames (exact) or streaming sources, as ``mode`` asks."""
    from ..datasets import load_table, table_format
    from ..drift.sources import CsvSource, ParquetSource, fits_in_memory

    formats = [table_format(reference), table_format(current)]  # both checked up front
    if mode == "exact" or (mode == "auto" and fits_in_memory(reference, current)):
        return load_table(reference), load_table(current)
    ref, cur = (ParquetSource(path) if kind == "parquet" else CsvSource(path)
                for path, kind in zip((reference, current), formats, strict=True))
    return ref, cur


@drift_group.command("history")
@click.option("--stage", default="monitor", show_default=True, help="Stage of the runs.")
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), default=None,
              help="Write a PNG of drift share and action over time.")
@RUNS_DIR
@JSON
def drift_history(stage: str, plot_out: Path | None, runs_dir: Path | None,
                  as_json: bool) -> None:
    """Drift share and action of every succeeded monitor run, oldest first."""
    from ..drift.history import drift_history as history

    rows = history(runs_dir, stage=stage)
    if plot_out is not None:
        from ..drift.plots import plot_drift_history
        from ..drift.report import Policy

        plot_drift_history(rows, plot_out, Policy())  # the tiers monitor runs use by default
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo(f"no succeeded '{stage}' runs with a drift action in this runs folder")
    for row in rows:
        click.echo(f"{row['started_at'][:19]}  {row['id']}  share={row['share_drifted']:.1%}  "
                   f"action={row['action']}")
