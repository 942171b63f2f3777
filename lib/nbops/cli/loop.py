"""``nbops loop tick | run --every D | history``: the closed loop from the command line.

Exit codes: ``tick`` 0 when the cycle succeeded or another tick holds the lease (it says
so), 1 when the cycle failed, 2 for a bad or missing ``loop:`` policy; ``run`` 0 when
stopped (Ctrl-C, SIGTERM or ``--max-ticks``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..util.files import dumps
from .common import JSON, RUNS_DIR, TRACKING_URI

if TYPE_CHECKING:
    from ..loop.tick import Busy
    from ..records.types import CycleRecord

CONFIG = click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
                      default=None, help="The nbops.yaml holding the loop policy [the "
                                         "project's].")


@click.group("loop")
def loop_group() -> None:
    """The closed loop: watch the prediction log, retrain on drift, record each cycle."""


@loop_group.command("tick")
@CONFIG
@RUNS_DIR
@TRACKING_URI
@JSON
def loop_tick(config: Path | None, runs_dir: Path | None, tracking_uri: str | None,
              as_json: bool) -> None:
    """Run one cycle now (idempotent under a lease: a second tick at the same time says
    which one runs and exits 0)."""
    from ..loop.config import load
    from ..loop.tick import tick
    from ..records.lifecycle import make_origin

    cfg = load(config=config)
    found = tick(cfg, runs_dir=runs_dir, tracking_uri=tracking_uri,
                 trigger=make_origin("cli")["trigger"],
                 report=None if as_json else click.echo)
    cycle = found.cycle
    if cycle is None:
        click.echo(_busy_line(found.busy))
        return
    click.echo(dumps(cycle) if as_json else _cycle_line(cycle))
    sys.exit(0 if cycle["status"] == "succeeded" else 1)


@loop_group.command("run")
@click.option("--every", required=True, help="Time between ticks: 90s, 30m, 6h, 7d.")
@click.option("--max-ticks", type=click.IntRange(min=1), default=None,
              help="Stop after this many ticks [run until stopped].")
@CONFIG
@RUNS_DIR
@TRACKING_URI
def loop_run(every: str, max_ticks: int | None, config: Path | None, runs_dir: Path | None,
             tracking_uri: str | None) -> None:
    """Tick now and then every EVERY, in this process, until Ctrl-C or SIGTERM. Ticks that
    a long cycle overran are coalesced into one tick, never caught up one by one."""
    from ..loop.config import load, seconds
    from ..loop.schedule import plan
    from ..loop.tick import tick
    from ..records.lifecycle import make_origin
    from ..runner import stop_on_signals

    interval = seconds(every, "--every")
    cfg = load(config=config)
    trigger = make_origin("schedule")["trigger"]
    start, slot, ticks = time.time(), -1, 0
    with stop_on_signals(threading.Event()) as stop:
        while not stop.is_set():
            slot, at, skipped = plan(start, interval, slot, time.time())
            if stop.wait(max(0.0, at - time.time())):
                break
            if skipped:
                click.echo(f"{skipped} missed tick(s) coalesced into this one")
            found = tick(cfg, runs_dir=runs_dir, tracking_uri=tracking_uri, trigger=trigger,
                         report=click.echo)
            click.echo(_cycle_line(found.cycle) if found.cycle is not None
                       else _busy_line(found.busy))
            ticks += 1
            if max_ticks is not None and ticks >= max_ticks:
                break


@loop_group.command("history")
@RUNS_DIR
@JSON
def loop_history(runs_dir: Path | None, as_json: bool) -> None:
    """Every cycle: when, window rows, drift, decision, retrain and its outcome."""
    from ..loop.tick import history

    cycles = history(runs_dir)
    if as_json:
        click.echo(dumps(cycles))
        return
    if not cycles:
        click.echo("no loop cycles yet (nbops loop tick runs one)")
        return
    for cycle in cycles:
        click.echo(_cycle_line(cycle))


def _v(version: int | None) -> str:
    return "(none)" if version is None else f"v{version}"


def _busy_line(busy: Busy | None) -> str:
    if busy is None:
        return "another tick is running; nothing done"
    return (f"another tick is running (cycle {busy['cycle']}, pid {busy['pid']} on "
            f"{busy['host']}, since {busy['started_at']}); nothing done")


def _cycle_line(cycle: CycleRecord) -> str:
    from ..loop.trial import describe as describe_trial

    drift = cycle["drift"]
    shown = "not measured" if drift is None else (
        f"{drift['action']}" + (f" ({drift['share']:.1%})" if drift["share"] is not None
                                else ""))
    decision = cycle["decision"]
    decided = "-" if decision is None else (
        f"{decision['action']} ({decision['cause']})"
        + (f" blocked: {decision['blocked']}" if decision["blocked"] else ""))
    outcome = cycle["outcome"]
    result = "" if outcome is None else (
        f"  retrain {cycle['pipeline_run']} {outcome['status']}, registered "
        f"{_v(outcome['version'])}, "
        + (f"champion {_v(outcome['champion_before'])} -> {_v(outcome['champion_after'])}"
           if outcome["promoted"] else f"champion stays {_v(outcome['champion_before'])}"))
    trial = cycle.get("trial")
    tried = f"  trial: {describe_trial(trial, cycle['id'])}" if trial else ""
    error = f"  error: {cycle['error']}" if cycle["error"] else ""
    return (f"{cycle['id']}  {cycle['status']:<9} {cycle['started_at'][:19]}  by "
            f"{cycle['origin']['trigger']}  rows {cycle['window']['rows']}  drift {shown}  "
            f"decision {decided}{result}{tried}{error}")
