"""``nbops audit MODEL``: how a model version came to be and what it did since."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI, num

if TYPE_CHECKING:
    from ..audit import AuditRun, AuditTrail


@click.command("audit")
@click.argument("model")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="The version to audit [the champion's, else the newest].")
@RUNS_DIR
@TRACKING_URI
@JSON
def audit_cmd(model: str, version: int | None, runs_dir: Path | None,
              tracking_uri: str | None, as_json: bool) -> None:
    """The chain behind MODEL's version: the data its training and evaluation read (hashes
    checked again now), the runs that made it (who ran them, why, template, git commit), its
    evaluation, approvals and promotions, and the traffic it served. Exit 1 when a data file
    changed or went missing since, a lineage run is not in this runs folder, the ledger's
    hash chain is broken, or the ledger and MLflow's copies of the moves disagree."""
    import sys

    from ..audit import trail

    found = trail(model, version, runs_dir, tracking_uri)
    click.echo(dumps(found) if as_json else render(found))
    broken = (any(d["state"] != "ok" for d in found["data"])
              or any(not r["found"] for r in found["runs"])
              or bool(found["ledger"]["breaks"] or found["ledger"]["mlflow"]))
    sys.exit(1 if broken else 0)


def render(found: AuditTrail) -> str:
    aliases = f"  [{', '.join(found['aliases'])}]" if found["aliases"] else ""
    lines = [f"{found['model']} v{found['version']}{aliases}"]
    if found["model_path"]:
        lines.append(f"model:    {found['model_path']}")
    if found["verdict"] is not None:
        metrics = ", ".join(f"{k}={num(v)}" for k, v in list(found["metrics"].items())[:6])
        lines.append(f"verdict:  {found['verdict']}  {metrics}".rstrip())
    lines.append("data:")
    for item in found["data"] or []:
        source = f"  from {item['produced_by']}" if item["produced_by"] else ""
        lines.append(f"  {item['state']:<8} {item['parameter']:<16} sha256 {item['sha256'][:16]}"
                     f"  {item['path']}{source}")
    if not found["data"]:
        lines.append("  (no input files recorded)")
    lines.append("runs:")
    lines += [f"  {_run_line(run)}" for run in found["runs"]]
    lines.append("approvals and promotions:")
    for event in found["events"]:
        was = f" (was v{event['previous']})" if event["previous"] is not None else ""
        evidence = f"  evidence: {', '.join(event['evidence'])}" if event["evidence"] else ""
        lines.append(f"  {event['at']}  {event['kind']:<8} {event['alias']}{was}  by "
                     f"{event['who']}: {event['reason']}{evidence}")
    if not found["events"]:
        lines.append("  (none in the ledger)")
    check = found["ledger"]
    if check["legacy"]:
        lines.append(f"  ({check['legacy']} ledger line(s) predate its hash chain: read, "
                     "not verifiable)")
    lines += [f"  LEDGER BROKEN at {text}" for text in check["breaks"]]
    lines += [f"  LEDGER DIFFERS FROM MLFLOW: {text}" for text in check["mlflow"]]
    if found["cycles"]:
        lines.append("loop cycles:")
        lines += [f"  {c['started_at'][:19]}  {c['id']}  {c['role']:<7} {c['status']}: "
                  f"{c['detail']}  (decision {c['why']})" for c in found["cycles"]]
    served = found["traffic"]
    if served["rows"] or served["failed_requests"]:
        variants = ", ".join(f"{k} {v}" for k, v in sorted(served["by_variant"].items()))
        lines.append(f"traffic:  {served['rows']} rows in {served['requests']} requests "
                     f"({variants}), {served['failed_requests']} failed requests, "
                     f"{served['first']} to {served['last']}")
    else:
        lines.append("traffic:  none logged (nbops serve writes the prediction log)")
    return "\n".join(lines)


def _run_line(run: AuditRun) -> str:
    if not run["found"]:
        return f"{run['role']:<9} {run['id']}  NOT IN THIS RUNS FOLDER"
    origin = run["origin"]
    who = (f"{origin['user']}@{origin['host']} ({origin['trigger']}"
           f"{', cycle ' + origin['cycle'] if origin['cycle'] else ''})" if origin else
           "(who: not recorded)")
    commit = f"  git {run['git_commit'][:10]}" if run["git_commit"] else ""
    return (f"{run['role']:<9} {run['id']}  {run['status']}  {run['template']}  by {who}"
            f"{commit}")
