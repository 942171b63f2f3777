"""``nbops demo loop``: the closed loop, end to end, on bundled data and a loopback server."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from ..util.files import dumps
from .common import JSON


@click.group("demo")
def demo_group() -> None:
    """Demonstrations that run on this machine in a few minutes."""


@demo_group.command("loop")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Project folder for the demo (new or empty) [a new "
                                 "temporary folder].")
@click.option("--windows", type=click.IntRange(2, 50), default=8, show_default=True,
              help="Windows of traffic, a loop tick after each.")
@click.option("--shifts", default=None, callback=lambda c, p, v: _floats(v, "--shifts"),
              help="Shift per window of three size features, in standard deviations, "
                   "comma-separated (sets the number of windows) [0, 0, then 3].")
@click.option("--wider", default=None, callback=lambda c, p, v: _floats(v, "--wider"),
              help="Shift per window of six more features (as many as --shifts; sets the "
                   "number of windows too) [0 for windows 0-4, then 2].")
@click.option("--rows", type=click.IntRange(10, 5000), default=120, show_default=True,
              help="Requests per window.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the timeline plot [DIR/loop-timeline.png].")
@JSON
def demo_loop(folder: Path | None, windows: int, shifts: list[float], wider: list[float],
              rows: int, plot_path: Path | None, as_json: bool) -> None:
    """Train a champion, serve it on a loopback port with the challenger alias as a shadow,
    send traffic whose features drift (a step on three features, later on six more; each
    window's labels arriving after its answers), tick the loop after each window, and
    print the timeline: drift, decisions, retrains and experiments on fresh data, the
    challenger's A/B trial, promotions, the drift reference rotated. Exit 0 when every
    cycle succeeded."""
    from ..loop.demo import DemoOptions, plot, run_demo, timeline_text

    where = folder or Path(tempfile.mkdtemp(prefix="nbops-loop-demo-"))
    if wider and len(wider) != len(shifts or wider):
        raise click.BadParameter("give as many values as --shifts", param_hint="--wider")
    rows_done = run_demo(DemoOptions(folder=where, windows=len(shifts or wider) or windows,
                                     rows=rows, shifts=shifts, wider=wider,
                                     report=None if as_json else click.echo))
    picture = plot(rows_done, plot_path or where / "loop-timeline.png")
    if as_json:
        click.echo(dumps({"folder": str(where), "plot": str(picture), "timeline": rows_done}))
    else:
        click.echo("")
        click.echo(timeline_text(rows_done))
        click.echo(f"\nplot:     {picture}")
        click.echo(f"cycles:   nbops loop history --runs-dir {where / 'runs'}")
        click.echo(f"audit:    nbops audit nbops-demo --runs-dir {where / 'runs'}")
    sys.exit(0 if all(r["status"] == "succeeded" for r in rows_done) else 1)


def _floats(value: str | None, name: str) -> list[float]:
    if not value:
        return []
    try:
        found = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers",
                                 param_hint=name) from None
    if not 2 <= len(found) <= 50 or any(abs(v) > 20 for v in found):
        raise click.BadParameter("give 2 to 50 windows, each shift within ±20 sd",
                                 param_hint=name)
    return found
