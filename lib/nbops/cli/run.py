"""``nbops run`` and ``nbops templates``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI, executor_options, run_summary


@click.command("run")
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
@TRACKING_URI
@click.option("--wait-mirror", is_flag=True, hidden=True,
              help="Accepted for old scripts: every run is mirrored before nbops returns.")
@executor_options("papermill")
@JSON
def run_cmd(template: str, cli_params: tuple[tuple[str, str], ...], params_file: Path | None,
            runs_dir: Path | None, timeout: float | None, cell_timeout: float | None,
            tracking_uri: str | None, wait_mirror: bool, executor: str, as_json: bool) -> None:
    """Run TEMPLATE (a template name or a path to an .ipynb) and record the run."""
    from ..records.lifecycle import make_origin
    from ..records.store import resolve_runs_dir
    from ..runner import RunOptions, run

    options = RunOptions(runs_dir=runs_dir, tracking_uri=tracking_uri, timeout=timeout,
                         cell_timeout=cell_timeout, executor=executor,
                         mirror="process",
                         progress=sys.stderr.isatty() and not as_json,
                         origin=make_origin("cli"))
    record = run(template, cli_params=cli_params, params_file=params_file, options=options)
    folder = resolve_runs_dir(runs_dir) / record["id"]
    click.echo(dumps(record) if as_json else run_summary(record, folder))
    sys.exit(0 if record["status"] == "succeeded" else 1)


@click.command("templates")
@JSON
def templates_cmd(as_json: bool) -> None:
    """List templates (this project's templates/ and those shipped with nbops)."""
    from ..contract.template import discover, load_template

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
        for secret in tpl["secrets"]:
            click.echo(f"    {secret['name']}: Secret (from the environment or the "
                       f"credentials file)  {secret['help']}".rstrip())
