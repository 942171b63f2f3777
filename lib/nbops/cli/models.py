"""``nbops models ls | show | promote | approve | rollback | history``: the registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI

if TYPE_CHECKING:
    from ..promotion.service import HistoryRow

ALIAS = click.option("--alias", default="champion", show_default=True, help="The alias.")
WHO = click.option("--user", "who", default=None,
                   help="Who is acting, self-declared, not authenticated [env NBOPS_USER; "
                        "the login name].")


@click.group("models")
def models_group() -> None:
    """The model registry: versions, aliases, promotions with evidence and approvals."""


@models_group.command("ls")
@RUNS_DIR
@TRACKING_URI
@JSON
def models_ls(runs_dir: Path | None, tracking_uri: str | None, as_json: bool) -> None:
    """Registered models with their aliases."""
    from ..promotion.service import where
    from ..tracking.registry import list_models

    models = list_models(where(runs_dir, tracking_uri)["tracking_uri"])
    if as_json:
        click.echo(dumps(models))
        return
    if not models:
        click.echo("no registered models in this registry")
    for model in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(model["aliases"].items()))
        click.echo(f"{model['name']:<30} latest v{model['latest_version']}  {aliases}")


@models_group.command("show")
@click.argument("name")
@RUNS_DIR
@TRACKING_URI
@JSON
def models_show(name: str, runs_dir: Path | None, tracking_uri: str | None,
                as_json: bool) -> None:
    """NAME's versions: aliases, source runs and their metrics, lineage."""
    from ..promotion.service import describe

    rows = describe(name, runs_dir, tracking_uri)
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        aliases = f"  [{', '.join(row['aliases'])}]" if row["aliases"] else ""
        click.echo(f"v{row['version']}{aliases}")
        for key, value in row["lineage"].items():
            click.echo(f"  {key:<13} {value}")
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in list(row["metrics"].items())[:8])
        if shown:
            click.echo(f"  metrics       {shown}")


@models_group.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@ALIAS
@click.option("--reason", default="", help="Why (kept in the ledger and MLflow).")
@click.option("--expect-current", default=None,
              help="Compare-and-set: the version the alias must hold now ('none': unset).")
@WHO
@RUNS_DIR
@TRACKING_URI
def models_promote(name: str, version: int, alias: str, reason: str,
                   expect_current: str | None, who: str | None, runs_dir: Path | None,
                   tracking_uri: str | None) -> None:
    """Point ALIAS of NAME at VERSION, if the project's promotion policy allows (an alias
    already at VERSION: nothing to do, nothing recorded)."""
    from ..errors import ConfigError
    from ..promotion.service import promote
    from ..tracking.registry import UNSET

    expected: int | None = None
    if expect_current is not None:
        text = expect_current.strip().lower().removeprefix("v")
        if text == "none":
            expected = UNSET
        elif text.isdigit():
            expected = int(text)
        else:
            raise ConfigError(f"--expect-current takes a version number or 'none', got "
                              f"{expect_current!r}")
    decision = promote(name, version, alias, reason=reason, who=who, expected=expected,
                       runs_dir=runs_dir, tracking_uri=tracking_uri)
    if not decision["moved"]:
        click.echo(f"{name}: {alias} already points to v{version}; nothing recorded")
        return
    evidence = ", ".join(f"{e['kind']} ({e['run_id']})" for e in decision["evidence"])
    click.echo(f"{name}: {alias} -> v{version}" + (f"; evidence: {evidence}" if evidence else ""))


@models_group.command("approve")
@click.argument("name")
@click.argument("version", type=int)
@ALIAS
@click.option("--reason", default="", help="A note kept with the approval.")
@WHO
@RUNS_DIR
@TRACKING_URI
def models_approve(name: str, version: int, alias: str, reason: str, who: str | None,
                   runs_dir: Path | None, tracking_uri: str | None) -> None:
    """Approve the open proposal to point ALIAS of NAME at VERSION."""
    from ..promotion.service import approve

    entry = approve(name, version, alias, who=who, reason=reason, runs_dir=runs_dir,
                    tracking_uri=tracking_uri)
    click.echo(f"{entry['who']} approved {name} v{version} as {alias} (evidence: "
               f"{', '.join(entry['evidence']) or 'none'}); promote it with: nbops models "
               f"promote {name} {version} --alias {alias}")


@models_group.command("rollback")
@click.argument("name")
@ALIAS
@click.option("--reason", default="", help="Why (kept in the ledger and MLflow).")
@WHO
@RUNS_DIR
@TRACKING_URI
def models_rollback(name: str, alias: str, reason: str, who: str | None,
                    runs_dir: Path | None, tracking_uri: str | None) -> None:
    """Point ALIAS of NAME back at the version it held before its last move (always a
    different version)."""
    from ..promotion.service import rollback

    version = rollback(name, alias, reason=reason, who=who, runs_dir=runs_dir,
                       tracking_uri=tracking_uri)
    click.echo(f"{name}: {alias} -> v{version} (rolled back)")


@models_group.command("history")
@click.argument("name")
@RUNS_DIR
@TRACKING_URI
@JSON
def models_history(name: str, runs_dir: Path | None, tracking_uri: str | None,
                   as_json: bool) -> None:
    """Every alias move, proposal and approval of NAME (from, to, who, when, why, evidence);
    moves made outside nbops are shown as unrecorded. Exit 1 when the ledger's hash chain
    is broken (each break is shown as a 'broken' row; the rest is still shown)."""
    import sys

    from ..promotion.service import history, ledger_state

    rows = history(name, runs_dir, tracking_uri)
    state = ledger_state(name, runs_dir, tracking_uri)
    if state["legacy"]:
        click.echo(f"note: the ledger's first {state['legacy']} line(s) predate its hash "
                   "chain (legacy): read, not verifiable", err=True)
    if state["breaks"]:
        click.echo(f"the ledger of {name} is broken ({len(state['breaks'])} break(s), shown "
                   "as 'broken'): it was changed outside nbops; nothing more is recorded "
                   "in it until it is restored or moved aside", err=True)
    if as_json:
        click.echo(dumps(rows))
    elif not rows:
        click.echo(f"no recorded alias moves for {name}")
    else:
        click.echo("\n".join(_line(row) for row in rows))
    sys.exit(1 if state["breaks"] else 0)


def _line(row: HistoryRow) -> str:
    if row["kind"] == "broken":
        return f"{'?':<25} {'BROKEN':<10} {row['reason']}"
    came = f"v{row['previous']}" if row["previous"] is not None else "-"
    went = f"v{row['version']}" if row["version"] is not None else "unset"
    evidence = f"  evidence: {', '.join(row['evidence'])}" if row["evidence"] else ""
    return (f"{row['at'] or '?':<25} {row['kind']:<10} {row['alias']:<11} "
            f"{came:>4} -> {went:<5} {row['who']:<12} {row['reason']}{evidence}")
