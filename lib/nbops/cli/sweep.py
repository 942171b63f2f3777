"""``nbops sweep TEMPLATE ... | sweep show [ID|latest] | sweep ls``.

``nbops sweep TEMPLATE`` is short for ``nbops sweep run TEMPLATE`` (a template named
``show``, ``ls`` or ``run`` needs the long form). Exit codes: 0 when at least one trial
succeeded (or came from the cache), 1 when every trial failed or the sweep was stopped,
2 for bad input (nothing run or written) and for a metric no trial logs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI, executor_options, num, short

if TYPE_CHECKING:
    from ..records.types import SweepRecord


class SweepGroup(click.Group):
    """A group whose default subcommand is ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("sweep", cls=SweepGroup)
def sweep_group() -> None:
    """Sweep a template's parameters: grid, random search or Optuna.

    \b
      nbops sweep train --grid C=0.1,1,10 --grid model=logreg,random_forest
          -p cv_folds 5 --maximize cv_accuracy
      nbops sweep train --random 8 --range C=0.01:10:log --seed 1 -p cv_folds 5
          --maximize cv_accuracy
      nbops sweep train --optuna 20 --range C=0.01:10:log -p cv_folds 5
          --maximize cv_accuracy
      nbops sweep show latest --plot sweep.png
    """


@sweep_group.command("run")
@click.argument("template")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="Values of a parameter (repeatable): a grid is their cartesian product; "
                   "with --random/--optuna, the choices.")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH[:log][:int]",
              help="A numeric range to sample (--random/--optuna; repeatable).")
@click.option("--space", "space_file", type=click.Path(path_type=Path), default=None,
              help="YAML search space: NAME: [V1, V2] or NAME: LOW:HIGH[:log][:int].")
@click.option("--random", "random_n", type=click.IntRange(min=1), default=None, metavar="N",
              help="N random trials from the space (seeded with --seed).")
@click.option("--optuna", "optuna_n", type=click.IntRange(min=1), default=None, metavar="N",
              help="N Optuna (TPE) trials; a trial is pruned on the values it logs over "
                   "steps, never on its final one.")
@click.option("--maximize", default=None, metavar="METRIC",
              help="The metric to maximise (logged with nbops.log_metric or output).")
@click.option("--minimize", default=None, metavar="METRIC", help="The metric to minimise.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of random sampling and of Optuna's sampler.")
@click.option("--no-prune", is_flag=True, help="Optuna: never prune a trial.")
@click.option("-p", "--param", "cli_params", type=(str, str), multiple=True,
              metavar="NAME VALUE", help="Fix a parameter for every trial (repeatable).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Trials to run at once [1; with --dask: one per worker thread]; each "
                   "kernel gets max(1, cores // N) threads.")
@click.option("--dask", default=None, metavar="ADDRESS|local:N",
              help="Run trials on a Dask cluster (or a local one of N workers).")
@click.option("--max-trials", type=click.IntRange(min=1), default=256, show_default=True,
              help="Refuse sweeps of more trials than this.")
@click.option("--force", is_flag=True, help="Run every trial, ignoring the cache.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Whole-run timeout of each trial, in seconds.")
@executor_options("pool")
@RUNS_DIR
@TRACKING_URI
@JSON
def sweep_run(template: str, grid: tuple[str, ...], ranges: tuple[str, ...],
              space_file: Path | None, random_n: int | None, optuna_n: int | None,
              maximize: str | None, minimize: str | None, seed: int | None, no_prune: bool,
              cli_params: tuple[tuple[str, str], ...], jobs: int | None, dask: str | None,
              max_trials: int, force: bool, timeout: float | None, executor: str,
              runs_dir: Path | None, tracking_uri: str | None, as_json: bool) -> None:
    """Run TEMPLATE once per point of a search space and pick the best trial."""
    from ..contract.template import resolve
    from ..execution.registry import EXECUTORS
    from ..records.lifecycle import make_origin
    from ..sweep.driver import SweepOptions, run_sweep
    from ..sweep.spec import SweepArgs, from_options

    tpl = resolve(template)
    args = SweepArgs(grid=list(grid), ranges=list(ranges), space_file=space_file,
                     random=random_n, optuna=optuna_n, maximize=maximize, minimize=minimize,
                     seed=seed, max_trials=max_trials, prune=not no_prune)
    spec = from_options(tpl, args, cli_params)
    EXECUTORS.get(executor)  # an unknown name is a usage error before anything runs
    report = None if as_json else (lambda line: click.echo(line, err=True))
    options = SweepOptions(runs_dir=runs_dir, tracking_uri=tracking_uri, jobs=jobs, dask=dask,
                           executor=executor, timeout=timeout, force=force, report=report,
                           origin=make_origin("cli"))
    record = run_sweep(tpl, spec, options)
    if as_json:
        click.echo(dumps(record))
    else:
        _print_table(record)
    sys.exit(0 if record["status"] == "succeeded" else 1)


def _print_table(record: SweepRecord) -> None:
    from ..sweep.select import ranked

    best = record["best"]["number"] if record["best"] else None
    metric = record["metric"]
    click.echo(f"sweep {record['id']}  {record['status']}  {record['strategy']}, "
               f"{len(record['trials'])} trials  ({record['duration_s'] or 0:.1f} s)")
    if metric:
        click.echo(f"{record['direction']} {metric}")
    names = list(record["space"])
    header = ["", "trial", "status", metric or "value", *names, "run"]
    rows = [header]
    for trial in ranked(record["trials"], record["direction"]):
        value = trial["value"]
        rows.append(["*" if trial["number"] == best else "", str(trial["number"]),
                     trial["status"], num(value) if value is not None else "-",
                     *(short(trial["parameters"].get(n), 24) for n in names),
                     trial["run_id"] or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())
    if best is not None and record["best"] is not None:
        click.echo(f"best: trial {best} (run {record['best']['run_id']}), {metric} = "
                   f"{num(record['best']['value'])}")
    if record["error"]:
        click.echo(f"error: {record['error']}")
    for trial in record["trials"]:
        if trial["status"] == "failed" and trial["error"]:
            click.echo(f"trial {trial['number']} failed: {short(trial['error'], 200)}")


@sweep_group.command("show")
@click.argument("sweep_id", default="latest", metavar="[ID|latest]")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a parameter/metric plot to this PNG file.")
@RUNS_DIR
@JSON
def sweep_show(sweep_id: str, plot: Path | None, runs_dir: Path | None, as_json: bool) -> None:
    """Show a sweep's trials, best first (the winner marked *)."""
    from ..records.store import resolve_runs_dir
    from ..records.sweeps import SweepStore

    record = SweepStore(resolve_runs_dir(runs_dir)).read(sweep_id)
    if as_json:
        click.echo(dumps(record))
    else:
        _print_table(record)
    if plot is not None:
        from ..sweep.plot import plot_sweep

        plot_sweep(record, plot)
        click.echo(f"plot: {plot}", err=as_json)


@sweep_group.command("ls")
@RUNS_DIR
@JSON
def sweep_ls(runs_dir: Path | None, as_json: bool) -> None:
    """List sweeps (validated sweep records), oldest first."""
    from ..errors import RecordError
    from ..records.store import resolve_runs_dir
    from ..records.sweeps import SweepStore

    store = SweepStore(resolve_runs_dir(runs_dir))
    found: list[Any] = []
    for sweep_id in store.ids():
        try:
            found.append(store.read(sweep_id))
        except RecordError as exc:
            click.echo(f"nbops: warning: skipped {exc}", err=True)
    found.sort(key=lambda rec: rec["started_at"])  # ids are ordered to the second only
    if as_json:
        click.echo(dumps(found))
        return
    for rec in found:
        best = rec["best"]
        shown = (f"best {rec['metric']}={num(best['value'])} (trial {best['number']})"
                 if best else "no winner")
        click.echo(f"{rec['id']}  {rec['status']:<9} {rec['strategy']:<6} "
                   f"{len(rec['trials'])} trials  {shown}  {rec['duration_s'] or 0:.1f} s")
