"""``nbops drift [compare] REF CUR`` and ``nbops drift history``."""

from __future__ import annotations

import sys
from pathlib import Path

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
@click.option("--fail-on", type=click.Choice(["retrain", "experiment"]), default=None,
              help="Exit 3 when the action is this one or more severe (for CI gates).")
@JSON
def drift_cmd(reference: Path, current: Path, target: str | None, prediction: str | None,
              timestamp: str | None, html_out: Path | None, fail_on: str | None,
              as_json: bool) -> None:
    """Compare REFERENCE and CURRENT (CSV or Parquet) and print the drift report."""
    from ..datasets import load_table
    from ..drift.detect import compare
    from ..errors import ConfigError
    from ..util.files import atomic_write_text

    try:
        ref, cur = load_table(reference), load_table(current)
        report = compare(ref, cur, target=target, prediction=prediction, timestamp=timestamp)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot compare {reference} and {current}: {exc}") from None
    if html_out is not None:
        atomic_write_text(html_out, report.to_html())
    if as_json:
        click.echo(dumps(report.to_dict()))
    else:
        click.echo(f"action: {report.action}  ({report.share_drifted:.1%} of features drifted; "
                   f"{report.measure} = {report.measured_value:.4g})")
        for name, col in report.columns.items():
            flag = "DRIFT" if col["drift"] else ("tiny" if col["significant_only"] else "")
            click.echo(f"  {name:<28} {col['kind']:<11} {col['test']:<5} "
                       f"p={col['p_value']:.3g} effect={col['effect_size']:.3g} {flag}".rstrip())
        for warning in report.warnings:
            click.echo(f"warning: {warning}")
    if fail_on and _SEVERITY[report.action] >= _SEVERITY[fail_on]:
        sys.exit(3)


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

        plot_drift_history(rows, plot_out)
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo(f"no succeeded '{stage}' runs with a drift action in this runs folder")
    for row in rows:
        click.echo(f"{row['started_at'][:19]}  {row['id']}  share={row['share_drifted']:.1%}  "
                   f"action={row['action']}")
