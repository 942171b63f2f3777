"""``nbops runs ls | show | verify``: reading the run store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..util.files import dumps
from ..util.text import shown
from .common import JSON, RUNS_DIR, num, run_summary, short

if TYPE_CHECKING:
    from ..records.types import RunRecord, Status

STATUS_CHOICE = click.Choice(["running", "succeeded", "failed", "killed"])


def _echo(text: str, err: bool = False) -> None:
    """Print ``text`` with control and format characters escaped line by line: a stage
    name, file name or error from a record can never recolour or reorder the terminal."""
    click.echo("\n".join(shown(line) for line in text.split("\n")), err=err)


@click.group("runs")
def runs_group() -> None:
    """Inspect and verify run records."""


@runs_group.command("ls")
@click.option("--stage", default=None, help="Only runs of this stage.")
@click.option("--status", type=STATUS_CHOICE, default=None, help="Only runs with this status.")
@click.option("--where", "where", multiple=True,
              help="Filter, e.g. 'metrics.accuracy>0.9', 'params.model=logreg', "
                   "'outputs.verdict!=pass' (repeat: all must hold).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0),
              help="Newest N runs (0: all).")
@RUNS_DIR
@JSON
def runs_ls(stage: str | None, status: str | None, where: tuple[str, ...], limit: int,
            runs_dir: Path | None, as_json: bool) -> None:
    """List run records, newest first."""
    from ..records.queries import list_records
    from ..records.select import matches, parse_where

    conditions = [parse_where(w) for w in where]
    problems: list[str] = []
    found = list_records(runs_dir, stage=stage, status=cast("Status | None", status),
                         problems=problems)
    for problem in problems:
        _echo(f"nbops: warning: skipped {problem}", err=True)
    if conditions:  # parameters are in the full record, not the listing's summary
        from ..records.queries import get_record

        found = [r for r in found if matches(get_record(r["id"], runs_dir), conditions)]
    shown = list(reversed(found))[: limit or None]
    if as_json:
        _echo(dumps([_brief(r) for r in shown]))
        return
    if not shown:
        _echo("no runs match" if (stage or status or where) else "no runs yet")
        return
    _echo(f"{'ID':<36}  {'STAGE':<12} {'STATUS':<9} {'STARTED':<19}  {'TIME':>7}  METRICS")
    for r in shown:
        metrics = " ".join(f"{k}={num(v)}" for k, v in list(r["metrics"].items())[:3])
        started = r["started_at"][:19].replace("T", " ")
        took = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
        _echo(f"{r['id']:<36}  {r['stage']:<12} {r['status']:<9} {started:<19}  "
                   f"{took:>7}  {metrics}".rstrip())
    if len(found) > len(shown):
        _echo(f"({len(found) - len(shown)} older runs not shown: --limit 0 for all)")


def _brief(record: RunRecord) -> dict[str, Any]:
    return {"id": record["id"], "stage": record["stage"], "status": record["status"],
            "started_at": record["started_at"], "duration_s": record["duration_s"],
            "metrics": record["metrics"]}


@runs_group.command("show")
@click.argument("run_id")
@RUNS_DIR
@JSON
def runs_show(run_id: str, runs_dir: Path | None, as_json: bool) -> None:
    """Show one run: RUN_ID is an id, a unique prefix of one, or 'latest'."""
    from ..records.queries import get_record, resolve_run
    from ..records.store import resolve_runs_dir

    run_id = resolve_run(run_id, runs_dir)
    record = get_record(run_id, runs_dir)
    if as_json:
        _echo(dumps(record))
        return
    _echo(run_summary(record, resolve_runs_dir(runs_dir) / run_id))
    _echo(f"stage:    {record['stage']}")
    origin = record.get("origin")
    if origin:
        cycle = f", loop cycle {origin['cycle']}" if origin["cycle"] else ""
        _echo(f"by:       {origin['user']}@{origin['host']} ({origin['trigger']}{cycle})")
    if record["template"]:
        _echo(f"template: {record['template']['name']} ({record['template']['sha256'][:12]})")
    for name, value in record["parameters"].items():
        _echo(f"  param {name} = {value!r}")
    _echo(f"artifacts: {len(record['artifacts'])} files")
    for artifact in record["artifacts"]:
        _echo(f"  {artifact['path']}  ({_size(artifact['bytes'])})")


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count = count / 1024  # type: ignore[assignment]
    return f"{count} B"


@runs_group.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--plot", "plot_out", type=click.Path(path_type=Path), default=None,
              help="Write a PNG of the metric histories the runs share.")
@RUNS_DIR
@JSON
def runs_compare(run_ids: tuple[str, ...], plot_out: Path | None, runs_dir: Path | None,
                 as_json: bool) -> None:
    """Parameters and metrics of RUN_IDS side by side (ids, prefixes or 'latest')."""
    from ..records.queries import get_record, resolve_run

    records = [get_record(resolve_run(r, runs_dir), runs_dir) for r in run_ids]
    table = _comparison(records)
    if plot_out is not None:
        _plot_histories(records, plot_out)
    if as_json:
        _echo(dumps(table))
        return
    ids = [r["id"] for r in records]
    names = max([len(k) for k in table["rows"]] + [9])
    width = max(14, *(len(i) for i in ids))
    _echo(f"{'':<{names}}  " + "  ".join(f"{i:<{width}}" for i in ids))
    for key, values in table["rows"].items():
        cells = [short(v, width) if v is not None else "-" for v in values]
        flag = "  *" if len({str(v) for v in values}) > 1 else ""
        _echo(f"{key:<{names}}  " + "  ".join(f"{c:<{width}}" for c in cells) + flag)
    _echo("(* differs)")


def _comparison(records: list[RunRecord]) -> dict[str, Any]:
    rows: dict[str, list[Any]] = {"stage": [r["stage"] for r in records],
                                  "status": [r["status"] for r in records],
                                  "duration_s": [r["duration_s"] for r in records]}
    for section, key in (("param", "parameters"), ("metric", "metrics"), ("output", "outputs")):
        names = sorted({n for r in records for n in r[key]})  # type: ignore[literal-required]
        for name in names:
            rows[f"{section}.{name}"] = [r[key].get(name)  # type: ignore[literal-required]
                                         for r in records]
    return {"runs": [r["id"] for r in records], "rows": rows}


def _plot_histories(records: list[RunRecord], path: Path) -> None:
    from matplotlib.figure import Figure

    shared = sorted(set.intersection(*(set(r["metric_history"]) for r in records)))
    if not shared:
        raise click.UsageError("the runs share no metric with a history to plot")
    fig = Figure(figsize=(7, 2.6 * len(shared)))
    axes = fig.subplots(len(shared), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, shared, strict=True):
        for record in records:
            points = record["metric_history"][name]
            ax.plot([p["step"] for p in points], [p["value"] for p in points], marker=".",
                    label=record["id"])
        ax.set(title=name, xlabel="step", ylabel=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


@runs_group.command("sync")
@click.argument("run_ids", nargs=-1)
@RUNS_DIR
def runs_sync(run_ids: tuple[str, ...], runs_dir: Path | None) -> None:
    """Mirror finished runs whose MLflow mirror is missing (a server that was down, a
    kernel killed mid-mirror) and say what was done to each; exit 1 while any mirror
    fails. Runs still running are skipped (they are mirrored when they end)."""
    from ..records.queries import sync_runs

    results = sync_runs(list(run_ids) or None, runs_dir)
    count = {state: sum(r.state == state for r in results)
             for state in ("synced", "already", "running", "untracked", "failed")}
    for result in results:
        if run_ids or result.state not in ("already", "untracked"):  # else only counted
            _echo(f"{result.run_id}  {_SYNC_LINE[result.state]}{result.note}")
    skipped = count["running"] + count["untracked"] + count["failed"]
    parts = [f"{count['synced']} synced now", f"{count['already']} already synced",
             f"{count['running']} running (skipped)", f"{count['untracked']} not tracked",
             f"{count['failed']} NOT synced"]
    summary = ", ".join(p for p in parts if not p.startswith("0 ")) or "no runs"
    if results and not skipped:
        summary += ": every finished run " + ("named " if run_ids else "") + "is mirrored"
    _echo(summary)
    if count["failed"]:
        sys.exit(1)


_SYNC_LINE = {"synced": "synced now, MLflow run ", "already": "already synced, MLflow run ",
              "running": "running: skipped, mirrored when it ends",
              "untracked": "not tracked (recorded with --tracking-uri none)",
              "failed": "NOT synced: "}


@runs_group.command("verify")
@click.argument("run_ids", nargs=-1)
@RUNS_DIR
def runs_verify(run_ids: tuple[str, ...], runs_dir: Path | None) -> None:
    """Re-hash every artifact of finished runs; exit 1 naming each missing, changed or
    unlisted file. A run still running is named as such and not checked."""
    from ..records.queries import verify_runs

    found = verify_runs(list(run_ids) or None, runs_dir)
    for run_id in found.running:
        _echo(f"{run_id}: running, not checked")
    for problem in found.problems:
        _echo(problem)
    if found.problems:
        sys.exit(1)
    if found.running:
        _echo("all artifacts of finished runs match their records")
    else:
        _echo("all artifacts match their records")
