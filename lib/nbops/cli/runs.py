"""``nbops runs ls | show | verify``: reading the run store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, num, run_summary

if TYPE_CHECKING:
    from ..records.types import RunRecord, Status

STATUS_CHOICE = click.Choice(["running", "succeeded", "failed", "killed"])


@click.group("runs")
def runs_group() -> None:
    """Inspect and verify run records."""


@runs_group.command("ls")
@click.option("--stage", default=None, help="Only runs of this stage.")
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only runs with this status.")
@RUNS_DIR
@JSON
def runs_ls(stage: str | None, status: str | None, runs_dir: Path | None, as_json: bool) -> None:
    """List run records, oldest first."""
    from ..records.queries import list_records

    problems: list[str] = []
    found = list_records(runs_dir, stage=stage, status=cast("Status | None", status),
                         problems=problems)
    for problem in problems:
        click.echo(f"nbops: warning: skipped {problem}", err=True)
    if as_json:
        click.echo(dumps([_brief(r) for r in found]))
        return
    for r in found:
        metrics = " ".join(f"{k}={num(v)}" for k, v in list(r["metrics"].items())[:3])
        click.echo(f"{r['id']}  {r['stage']:<12} {r['status']:<9} {metrics}".rstrip())


def _brief(record: RunRecord) -> dict[str, Any]:
    return {"id": record["id"], "stage": record["stage"], "status": record["status"],
            "started_at": record["started_at"], "duration_s": record["duration_s"],
            "metrics": record["metrics"]}


@runs_group.command("show")
@click.argument("run_id")
@RUNS_DIR
@JSON
def runs_show(run_id: str, runs_dir: Path | None, as_json: bool) -> None:
    """Show one run record."""
    from ..records.queries import get_record
    from ..records.store import resolve_runs_dir

    record = get_record(run_id, runs_dir)
    if as_json:
        click.echo(dumps(record))
        return
    click.echo(run_summary(record, resolve_runs_dir(runs_dir) / run_id))
    click.echo(f"stage:    {record['stage']}")
    if record["template"]:
        click.echo(f"template: {record['template']['name']} ({record['template']['sha256'][:12]})")
    for name, value in record["parameters"].items():
        click.echo(f"  param {name} = {value!r}")
    click.echo(f"artifacts: {len(record['artifacts'])} files")


@runs_group.command("sync")
@click.argument("run_ids", nargs=-1)
@RUNS_DIR
def runs_sync(run_ids: tuple[str, ...], runs_dir: Path | None) -> None:
    """Mirror finished runs whose MLflow mirror is missing (a server that was down);
    exit 1 while any still is."""
    from ..records.queries import sync_runs

    results = sync_runs(list(run_ids) or None, runs_dir)
    for run_id, synced, note in results:
        click.echo(f"{run_id}  {'synced' if synced else 'NOT synced: ' + note}")
    if not results:
        click.echo("every finished run is mirrored")
    if any(not synced for _, synced, _ in results):
        sys.exit(1)


@runs_group.command("verify")
@click.argument("run_ids", nargs=-1)
@RUNS_DIR
def runs_verify(run_ids: tuple[str, ...], runs_dir: Path | None) -> None:
    """Re-hash every artifact; exit 1 naming each missing, changed or unlisted file."""
    from ..records.queries import verify_runs

    problems = verify_runs(list(run_ids) or None, runs_dir)
    for problem in problems:
        click.echo(problem)
    if problems:
        sys.exit(1)
    click.echo("all artifacts match their records")
