"""What every command group shares: options declared once, and text formatting.

Invariant: no logic here, only parsing helpers and formatting of plain data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ..records.types import RunRecord

RUNS_DIR = click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=None, help="Run records folder [env NBOPS_RUNS_DIR; ./runs].")
JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
TRACKING_URI = click.option(
    "--tracking-uri", default=None,
    help="MLflow tracking URI, or 'none' to keep run records only [env MLFLOW_TRACKING_URI; "
         "SQLite in the runs dir].")
F = TypeVar("F", bound=Callable[..., Any])


def executor_options(default: str) -> Callable[[F], F]:
    """``--executor NAME`` and its shorthand ``--reuse-kernel`` (= ``--executor reuse``);
    the command receives the chosen name as ``executor``."""

    def use_reuse(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            given = ctx.params.get("executor")
            if given not in (None, default, "reuse"):
                raise click.BadParameter(f"--reuse-kernel means --executor reuse, not {given!r}",
                                         ctx=ctx, param=param)
            ctx.params["executor"] = "reuse"
        return value

    def decorate(command: F) -> F:
        command = click.option(
            "--reuse-kernel", is_flag=True, expose_value=False, callback=use_reuse,
            help="Run stages one after another in one warm kernel per job, its namespace "
                 "cleared between them (fastest; see the README for what carries over).",
        )(command)
        return click.option(
            "--executor", default=default, show_default=True, is_eager=True,
            help="Executor by name (built in: papermill = a new kernel per run; pool = warm "
                 "kernels with imports preloaded, a new process per run; reuse; plugins: "
                 "entry points 'nbops.executors').")(command)

    return decorate


def num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def short(value: Any, width: int = 100) -> str:
    """A value on one line, cut to ``width`` characters."""
    import json

    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run_summary(record: RunRecord, folder: Path) -> str:
    """A few lines about a finished run: status, record folder, metrics, outputs, error."""
    lines = [f"run {record['id']}  {record['status']}  ({record['duration_s'] or 0:.1f} s)",
             f"record:   {folder}"]
    if record["metrics"]:
        items = list(record["metrics"].items())
        shown = ", ".join(f"{k}={num(v)}" for k, v in items[:8])
        more = f" (+{len(items) - 8} more: nbops runs show --json)" if len(items) > 8 else ""
        lines.append(f"metrics:  {shown}{more}")
    verdict = record["outputs"].get("verdict")
    if isinstance(verdict, str) and verdict != "pass":
        lines.insert(1, f"VERDICT:  {verdict.upper()}  (the stage ran, its checks did not pass: "
                        "see outputs)")
    for name, value in record["outputs"].items():
        lines.append(f"output:   {name} = {short(value)}")
    if record["models"]:
        lines.append(f"models:   {', '.join(record['models'])}")
    for warning in record["warnings"]:
        lines.append(f"warning:  {warning}")
    if record["error"]:
        lines.append(f"error:    {record['error']['message']}")
        lines.append(f"notebook: {folder / 'notebook.ipynb'} (failing cell marked)")
    return "\n".join(lines)
