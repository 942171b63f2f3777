"""``nbops pipeline run | show | ls``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI, executor_options, num

if TYPE_CHECKING:
    from ..records.types import PipelineRecord

PIPELINE_FILE = click.argument("file", required=False, type=click.Path(path_type=Path))
OVERRIDES = click.option("-p", "--param", "overrides", type=(str, str), multiple=True,
                         metavar="STAGE.NAME VALUE",
                         help="Override a stage parameter (repeatable).")
FORCE = click.option("--force", is_flag=True, help="Run every stage, ignoring the cache.")


@click.group("pipeline")
def pipeline_group() -> None:
    """Run and inspect pipelines (pipeline.yaml)."""


@pipeline_group.command("run")
@PIPELINE_FILE
@OVERRIDES
@FORCE
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Independent stages to run at once [default: 1; with --dask: one per "
                   "worker thread of the cluster].")
@click.option("--on-drift", type=click.Choice(["retrain"]), default=None,
              help="When a stage outputs action=retrain, run the train stages and everything "
                   "after them again (once).")
@click.option("--scheduler", default="threads", show_default=True,
              help="Who runs stages (built in: threads, dask = --dask local:JOBS; plugins: "
                   "entry points 'nbops.schedulers').")
@click.option("--dask", "dask", metavar="ADDRESS|local:N", default=None,
              callback=lambda ctx, param, value: _check_dask(value),
              help="Run stages on Dask workers: a scheduler's address (tcp://host:8786) or "
                   "local:N (a cluster of N worker processes here, closed at the end). The "
                   "workers must see the runs and project folders at the same paths.")
@executor_options("pool")
@RUNS_DIR
@TRACKING_URI
@JSON
def pipeline_run(file: Path | None, overrides: tuple[tuple[str, str], ...], force: bool,
                 jobs: int | None, on_drift: str | None, scheduler: str, dask: str | None,
                 executor: str, runs_dir: Path | None, tracking_uri: str | None,
                 as_json: bool) -> None:
    """Run the pipeline in FILE (default: ./pipeline.yaml); a second run resumes."""
    from ..execution.registry import EXECUTORS
    from ..pipeline.run import PipelineOptions, run_pipeline
    from ..pipeline.scheduler import SCHEDULERS
    from ..pipeline.spec import load
    from ..records.lifecycle import make_origin
    from ..sweep.stage import PipelineSweeper

    pipe = load(file, overrides)
    EXECUTORS.get(executor)  # unknown names are usage errors before anything runs
    SCHEDULERS.get(scheduler)
    report = None if as_json else (lambda line: click.echo(line, err=True))
    options = PipelineOptions(runs_dir=runs_dir, tracking_uri=tracking_uri, jobs=jobs,
                              force=force, progress=sys.stderr.isatty() and not as_json,
                              report=report, on_drift=on_drift, executor=executor,
                              scheduler=scheduler, dask=dask, sweeper=PipelineSweeper(),
                              origin=make_origin("cli"))
    record = run_pipeline(pipe, options)
    if as_json:
        click.echo(dumps(record))
    else:
        _print_result(record, runs_dir, tracking_uri)
    sys.exit(0 if record["status"] == "succeeded" else 1)


def _check_dask(value: str | None) -> str | None:
    from ..errors import UsageError
    from ..pipeline.address import parse_dask

    if value is not None:
        try:
            parse_dask(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _print_result(record: PipelineRecord, runs_dir: Path | None,
                  tracking_uri: str | None) -> None:
    from ..records.store import resolve_runs_dir
    from ..tracking.uri import resolve_uri

    click.echo(f"pipeline {record['id']}  {record['status']}  ({record['duration_s'] or 0:.1f} s)")
    click.echo(up_to_date(record))
    for name, stage in record["stages"].items():
        cached = " (cached)" if stage["cached"] else ""
        if "sweep_id" in stage:
            cached += f" (best of sweep {stage['sweep_id']})"
        click.echo(f"  {name:<14} {stage['status']:<9}{cached} {stage['run_id'] or ''}")
    if record["error"]:
        click.echo(record["error"])
    if "retrained" in record:
        retrained = record["retrained"]
        click.echo(f"retrained after drift in '{retrained['trigger']}': "
                   f"{', '.join(retrained['stages'])}")
    for label, value in record.get("summary", {}).items():
        shown = (", ".join(f"{k}={num(v)}" for k, v in value.items())
                 if isinstance(value, dict) else num(value))
        click.echo(f"{label + ':':<19}{shown}")
    folder = resolve_runs_dir(runs_dir)
    click.echo(f"{'run records:':<19}{folder} (nbops runs ls; nbops runs show RUN_ID)")
    # nothing ran: no parent run, the store is still where the stages' runs are
    uri = (record["mlflow"]["tracking_uri"] if record["mlflow"] else
           resolve_uri(tracking_uri, folder))
    if uri.startswith("sqlite:"):
        click.echo(f"{'MLflow UI:':<19}mlflow ui --backend-store-uri {uri}")
    click.echo(f"{'notebooks:':<19}{folder}/<run id>/notebook.ipynb (open in JupyterLab)")


def up_to_date(record: PipelineRecord) -> str:
    """The line that says how much ran: "everything up to date" when nothing did."""
    stages = record["stages"].values()
    cached = sum(1 for s in stages if s["cached"])
    ran = sum(1 for s in stages if not s["cached"] and s["status"] != "pending")
    if record["status"] == "succeeded" and ran == 0:
        return f"everything up to date: all {cached} stages from the cache, none ran"
    return f"{ran} stage(s) ran, {cached} from the cache"


@pipeline_group.command("show")
@PIPELINE_FILE
@OVERRIDES
@FORCE
@RUNS_DIR
@TRACKING_URI
@JSON
def pipeline_show(file: Path | None, overrides: tuple[tuple[str, str], ...], force: bool,
                  runs_dir: Path | None, tracking_uri: str | None, as_json: bool) -> None:
    """Show the pipeline's DAG and what 'pipeline run' with the same FILE, -p and --force
    would do with each stage: take it from the cache, run it (and why), or decide once the
    stages it waits for have run."""
    from ..pipeline.cache import Lookup
    from ..pipeline.predict import predict
    from ..pipeline.spec import load
    from ..records.store import RunStore, resolve_runs_dir
    from ..tracking.uri import resolve_uri

    pipe = load(file, overrides)
    folder = resolve_runs_dir(runs_dir)
    lookup = Lookup(RunStore(folder), resolve_uri(tracking_uri, folder), pipe.path.parent)
    states = predict(pipe, lookup, force)
    if as_json:
        click.echo(dumps({"name": pipe.name, "file": str(pipe.path),
                          "stages": {n: p.to_dict() for n, p in states.items()}}))
        return
    click.echo(f"pipeline {pipe.name} ({pipe.path}): {len(pipe.order)} stages")
    for position, name in enumerate(pipe.order, 1):
        stage = pipe.stages[name]
        after = f" <- {', '.join(stage.upstream)}" if stage.upstream else ""
        click.echo(f"  {position}. {name} [{stage.template.name}]{after}: {states[name]}")
        for param, (source, out) in stage.refs.items():
            click.echo(f"       {param} = {source}.outputs.{out}")
    if all(p.will == "cache" for p in states.values()):
        click.echo("everything up to date: 'nbops pipeline run' would run no stage")


@pipeline_group.command("ls")
@RUNS_DIR
@JSON
def pipeline_ls(runs_dir: Path | None, as_json: bool) -> None:
    """List pipeline runs (validated pipeline records), oldest first."""
    from ..errors import RecordError
    from ..records.pipelines import PipelineStore
    from ..records.store import resolve_runs_dir

    store = PipelineStore(resolve_runs_dir(runs_dir))
    found = []
    for pipeline_id in store.ids():
        try:
            found.append(store.read(pipeline_id))
        except RecordError as exc:
            click.echo(f"nbops: warning: skipped {exc}", err=True)
    if as_json:
        click.echo(dumps(found))
        return
    for rec in found:
        stages = rec["stages"].values()
        cached = sum(1 for s in stages if s["cached"])
        click.echo(f"{rec['id']}  {rec['status']:<9} {len(rec['stages'])} stages "
                   f"({cached} cached)  {rec['duration_s'] or 0:.1f} s")
