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
@click.option("--windows", type=click.IntRange(2, 50), default=6, show_default=True,
              help="Windows of traffic, a loop tick after each.")
@click.option("--rows", type=click.IntRange(10, 5000), default=120, show_default=True,
              help="Requests per window.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the timeline plot [DIR/loop-timeline.png].")
@JSON
def demo_loop(folder: Path | None, windows: int, rows: int, plot_path: Path | None,
              as_json: bool) -> None:
    """Train a champion, serve it on a loopback port, send traffic whose features drift
    more and more (labels arriving one window late), tick the loop after each window, and
    print the timeline: drift, decisions, retrains on fresh data, promotions, the drift
    reference rotated. Exit 0 when every cycle succeeded."""
    from ..loop.demo import DemoOptions, plot, run_demo, timeline_text

    where = folder or Path(tempfile.mkdtemp(prefix="nbops-loop-demo-"))
    rows_done = run_demo(DemoOptions(folder=where, windows=windows, rows=rows,
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
