"""The ``nbops`` command line: parses, delegates, formats. No logic lives here.

Exit codes: 0 succeeded; 1 a run failed or was killed, or verification found problems;
2 bad usage, template or parameters (nothing was run or written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .errors import NbopsError, UsageError
from .fsutil import dumps

RUNS_DIR = click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help="Run records folder [env NBOPS_RUNS_DIR; ./runs].")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nbops")
def cli() -> None:
    """nbops: run parameterized notebooks as recorded, reproducible stages."""


@cli.command("run")
@click.argument("template")
@click.option("-p", "--param", "cli_params", type=(str, str), multiple=True,
              metavar="NAME VALUE", help="Set a parameter (repeatable); YAML-style value.")
@click.option("-f", "--params-file", type=click.Path(path_type=Path), default=None,
              help="YAML file of parameters (-p overrides it).")
@RUNS_DIR
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Whole-run timeout in seconds.")
@click.option("--cell-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-cell timeout in seconds.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [env MLFLOW_TRACKING_URI; SQLite in the runs dir].")
@JSON
def run_cmd(template: str, cli_params: tuple[tuple[str, str], ...], params_file: Path | None,
            runs_dir: Path | None, timeout: float | None, cell_timeout: float | None,
            tracking_uri: str | None, as_json: bool) -> None:
    """Run TEMPLATE (a template name or a path to an .ipynb) and record the run."""
    from .runner import RunOptions, run

    options = RunOptions(runs_dir=runs_dir, tracking_uri=tracking_uri, timeout=timeout,
                         cell_timeout=cell_timeout, progress=sys.stderr.isatty() and not as_json)
    record = run(template, cli_params=cli_params, params_file=params_file, options=options)
    from .records import resolve_runs_dir

    folder = resolve_runs_dir(runs_dir) / record["id"]
    click.echo(dumps(record) if as_json else _run_summary(record, folder))
    sys.exit(0 if record["status"] == "succeeded" else 1)


def _run_summary(record: dict[str, Any], folder: Path) -> str:
    lines = [f"run {record['id']}  {record['status']}  ({record['duration_s']:.1f} s)",
             f"record:   {folder}"]
    if record["metrics"]:
        items = list(record["metrics"].items())
        shown = ", ".join(f"{k}={_num(v)}" for k, v in items[:8])
        more = f" (+{len(items) - 8} more: nbops runs show --json)" if len(items) > 8 else ""
        lines.append(f"metrics:  {shown}{more}")
    if record["outputs"]:
        lines.append(f"outputs:  {', '.join(record['outputs'])}")
    if record.get("models"):
        lines.append(f"models:   {', '.join(record['models'])}")
    for warning in record.get("warnings", []):
        lines.append(f"warning:  {warning}")
    if record["error"]:
        lines.append(f"error:    {record['error']['message']}")
        lines.append(f"notebook: {folder / 'notebook.ipynb'} (failing cell marked)")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@cli.command("templates")
@JSON
def templates_cmd(as_json: bool) -> None:
    """List templates (this project's templates/ and those shipped with nbops)."""
    from .contract import discover, load_template

    found = [load_template(path, name).to_dict() for name, path in discover().items()]
    if as_json:
        click.echo(dumps(found))
        return
    for tpl in found:
        click.echo(f"{tpl['name']}  (stage: {tpl['stage']})  {tpl['path']}")
        if tpl["description"]:
            click.echo(f"    {tpl['description']}")
        for p in tpl["parameters"]:
            click.echo(f"    {p['name']}: {p['type']} = {p['default']!r}  {p['help']}".rstrip())


@cli.group("runs")
def runs_group() -> None:
    """Inspect and verify run records."""


@runs_group.command("ls")
@click.option("--stage", default=None, help="Only runs of this stage.")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed", "killed"]),
              default=None, help="Only runs with this status.")
@RUNS_DIR
@JSON
def runs_ls(stage: str | None, status: str | None, runs_dir: Path | None, as_json: bool) -> None:
    """List run records, oldest first."""
    from .runs import list_records

    problems: list[str] = []
    found = list_records(runs_dir, stage=stage, status=status, problems=problems)
    for problem in problems:
        click.echo(f"nbops: warning: skipped {problem}", err=True)
    if as_json:
        click.echo(dumps([_brief(r) for r in found]))
        return
    for r in found:
        metrics = " ".join(f"{k}={_num(v)}" for k, v in list(r["metrics"].items())[:3])
        click.echo(f"{r['id']}  {r['stage']:<12} {r['status']:<9} {metrics}".rstrip())


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "stage", "status", "started_at", "duration_s", "metrics")
    return {k: record[k] for k in keys}


@runs_group.command("show")
@click.argument("run_id")
@RUNS_DIR
@JSON
def runs_show(run_id: str, runs_dir: Path | None, as_json: bool) -> None:
    """Show one run record."""
    from .records import resolve_runs_dir
    from .runs import get_record

    record = get_record(run_id, runs_dir)
    if as_json:
        click.echo(dumps(record))
        return
    click.echo(_run_summary(record, resolve_runs_dir(runs_dir) / run_id))
    click.echo(f"stage:    {record['stage']}")
    if record["template"]:
        click.echo(f"template: {record['template']['name']} ({record['template']['sha256'][:12]})")
    for name, value in record["parameters"].items():
        click.echo(f"  param {name} = {value!r}")
    click.echo(f"artifacts: {len(record['artifacts'])} files")


@runs_group.command("verify")
@click.argument("run_ids", nargs=-1)
@RUNS_DIR
def runs_verify(run_ids: tuple[str, ...], runs_dir: Path | None) -> None:
    """Re-hash every artifact; exit 1 naming each missing, changed or unlisted file."""
    from .runs import verify_runs

    problems = verify_runs(list(run_ids) or None, runs_dir)
    for problem in problems:
        click.echo(problem)
    if problems:
        sys.exit(1)
    click.echo("all artifacts match their records")


@cli.group("pipeline")
def pipeline_group() -> None:
    """Run and inspect pipelines (pipeline.yaml)."""


PIPELINE_FILE = click.argument("file", required=False, type=click.Path(path_type=Path))


@pipeline_group.command("run")
@PIPELINE_FILE
@click.option("-p", "--param", "overrides", type=(str, str), multiple=True,
              metavar="STAGE.NAME VALUE", help="Override a stage parameter (repeatable).")
@click.option("--force", is_flag=True, help="Run every stage, ignoring the cache.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Independent stages to run at once.")
@click.option("--on-drift", type=click.Choice(["retrain"]), default=None,
              help="When a stage outputs action=retrain, run the train stages and everything "
                   "after them again (once).")
@RUNS_DIR
@click.option("--tracking-uri", default=None, help="MLflow tracking URI.")
@JSON
def pipeline_run(file: Path | None, overrides: tuple[tuple[str, str], ...], force: bool,
                 jobs: int, on_drift: str | None, runs_dir: Path | None,
                 tracking_uri: str | None, as_json: bool) -> None:
    """Run the pipeline in FILE (default: ./pipeline.yaml); a second run resumes."""
    from .pipeline import load
    from .pipeline_runner import PipelineOptions, run_pipeline

    pipe = load(file, overrides)
    report = None if as_json else (lambda line: click.echo(line, err=True))
    options = PipelineOptions(runs_dir=runs_dir, tracking_uri=tracking_uri, jobs=jobs,
                              force=force, progress=sys.stderr.isatty() and not as_json,
                              report=report, on_drift=on_drift)
    record = run_pipeline(pipe, options)
    if as_json:
        click.echo(dumps(record))
    else:
        click.echo(f"pipeline {record['id']}  {record['status']}  ({record['duration_s']:.1f} s)")
        for name, stage in record["stages"].items():
            cached = " (cached)" if stage["cached"] else ""
            click.echo(f"  {name:<14} {stage['status']:<9}{cached} {stage['run_id'] or ''}")
        if record["error"]:
            click.echo(record["error"])
        if record.get("retrained"):
            retrained = record["retrained"]
            click.echo(f"retrained after drift in '{retrained['trigger']}': "
                       f"{', '.join(retrained['stages'])}")
        _pipeline_epilogue(record, runs_dir)
    sys.exit(0 if record["status"] == "succeeded" else 1)


def _pipeline_epilogue(record: dict[str, Any], runs_dir: Path | None) -> None:
    from .records import resolve_runs_dir

    for label, value in record.get("summary", {}).items():
        shown = (", ".join(f"{k}={_num(v)}" for k, v in value.items())
                 if isinstance(value, dict) else _num(value))
        click.echo(f"{label + ':':<19}{shown}")
    folder = resolve_runs_dir(runs_dir)
    click.echo(f"{'run records:':<19}{folder} (nbops runs ls; nbops runs show RUN_ID)")
    uri = (record.get("mlflow") or {}).get("tracking_uri", "")
    if uri.startswith("sqlite:"):
        click.echo(f"{'MLflow UI:':<19}mlflow ui --backend-store-uri {uri}")
    click.echo(f"{'notebooks:':<19}{folder}/<run id>/notebook.ipynb (open in JupyterLab)")


@pipeline_group.command("show")
@PIPELINE_FILE
@RUNS_DIR
def pipeline_show(file: Path | None, runs_dir: Path | None) -> None:
    """Show the pipeline's DAG and each stage's cache state."""
    from .pipeline import load
    from .pipeline_runner import cache_states

    pipe = load(file)
    states = cache_states(pipe, runs_dir)
    click.echo(f"pipeline {pipe.name} ({pipe.path}): {len(pipe.order)} stages")
    for position, name in enumerate(pipe.order, 1):
        stage = pipe.stages[name]
        after = f" <- {', '.join(stage.upstream)}" if stage.upstream else ""
        click.echo(f"  {position}. {name} [{stage.template.name}]{after}: {states[name]}")
        for param, (source, out) in stage.refs.items():
            click.echo(f"       {param} = {source}.outputs.{out}")


_SEVERITY = {"none": 0, "warn": 1, "retrain": 2, "experiment": 3}


class _CompareByDefault(click.Group):
    """``nbops drift REF CUR`` means ``nbops drift compare REF CUR``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["compare", *args]
        return super().parse_args(ctx, args)


@cli.group("drift", cls=_CompareByDefault)
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
    from .datasets import load_table
    from .drift import compare
    from .errors import ConfigError
    from .fsutil import atomic_write_text

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
    from .runs import drift_history as history

    rows = history(runs_dir, stage=stage)
    if plot_out is not None:
        from .runs import plot_drift_history

        plot_drift_history(rows, plot_out)
    if as_json:
        click.echo(dumps(rows))
        return
    if not rows:
        click.echo(f"no succeeded '{stage}' runs with a drift action in this runs folder")
    for row in rows:
        click.echo(f"{row['started_at'][:19]}  {row['id']}  share={row['share_drifted']:.1%}  "
                   f"action={row['action']}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one clear message and an exit code, no traceback."""
    try:
        cli.main(args=argv, prog_name="nbops", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        click.echo(f"nbops: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except NbopsError as exc:
        click.echo(f"nbops: error: {exc}", err=True)
        sys.exit(exc.exit_code)
