"""One cycle of the closed loop, under a lease: watch, decide, retrain, record.

A tick (1) takes the loop's lease, an exclusive lock on ``runs/loop/.tick.lock`` held for
the whole cycle and released by the OS if the process dies (a second tick at the same time
returns at once and says who holds it); (2) counts the answered rows the prediction log
gained since the last window a monitor judged (rows too few to judge wait for the next
cycle); (3) with enough of them, runs the monitor
template on that window against the current drift reference; (4) decides (``decide``)
under the limits; (5) for a retrain or an experiment runs the configured pipeline (every
stage forced: the loop asks for a new model) and notes the version it registered and
whether the champion changed; (6) when it did, rotates the drift reference to the traffic
this cycle's monitor judged (the inputs of the window, written to
``runs/loop/data/<cycle>-reference.parquet``: what the new champion now faces), or, for a
retrain no monitor run asked for, to the pipeline's ``reference_path`` output, so drift
stops firing for a change the new model was trained on and fires again if it goes on.

Invariants: every run a cycle starts carries ``origin.trigger = loop`` and the cycle id
(records and MLflow), so ``nbops audit`` links a model to the cycle that made it; the
cycle record is written when the cycle starts and at its end (``running`` only while its
tick lives); a retrain never re-triggers itself: the next cycle's window starts where this
one's ended, the loop acts only on its own monitor run (never on a monitor stage inside the
retrain pipeline), and the cooldown counts from the retrain's start.

A tick that dies (SIGKILL, out of memory) releases the lease with its process; its cycle
names it (``driver``), so the next tick (or ``nbops loop history``) marks the cycle, its
runs and its retrain pipeline ``killed`` and says so. The next tick then decides afresh:
the killed cycle's window is judged again (with the rows since), and its retrain counts
toward the daily limit only (``decide``), so a trigger that still holds retrains again.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

from filelock import FileLock, Timeout

from ..errors import NbopsError
from ..pipeline.run import PipelineOptions
from ..promotion.service import where
from ..records.cycles import CycleStore
from ..records.lifecycle import make_origin
from ..records.queries import get_record
from ..records.reconcile import this_driver
from ..records.schema import CYCLE_SCHEMA
from ..records.store import new_run_id, utcnow
from ..records.types import CycleRecord, CycleTrial, Origin, PipelineRecord, Trigger
from ..runner import RunOptions, run
from ..serving.predlog import entries, log_folder
from ..sweep.stage import run_pipeline_with_sweeps
from ..tracking import ledger, registry
from ..util.files import atomic_write_json
from .config import LoopConfig
from .decide import Facts, PerformanceFacts, decide
from .fresh import FOLDER as FRESH_FOLDER
from .fresh import build
from .performance import measure
from .trial import Trial, blocking, carried, opened, secret_names, snapshot

LOCK = "loop/.tick.lock"
HOLDER = "loop/tick.json"  # who holds the lease (for the message a second tick prints)


class Busy(TypedDict):
    """The tick that holds the lease."""

    cycle: str
    pid: int
    host: str
    started_at: str


@dataclass(frozen=True)
class Ticked:
    """What a tick did: its cycle, or (``cycle`` None) the tick that held the lease."""

    cycle: CycleRecord | None
    busy: Busy | None = None


def tick(cfg: LoopConfig, *, runs_dir: str | Path | None = None,
         tracking_uri: str | None = None, trigger: Trigger = "cli",
         report: Callable[[str], None] | None = None) -> Ticked:
    """Run one cycle (or, when another tick holds the lease, nothing)."""
    place = where(runs_dir, tracking_uri)
    runs = place["runs_dir"]
    (runs / "loop").mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(runs / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return Ticked(None, _holder(runs))
    try:
        origin = make_origin(trigger)
        cycle_id = new_run_id("cycle")
        holder: Busy = {"cycle": cycle_id, "pid": os.getpid(), "host": socket.gethostname(),
                        "started_at": utcnow()}
        atomic_write_json(runs / HOLDER, holder)
        return Ticked(Cycle(cfg, place["tracking_uri"], runs, cycle_id, origin, report).run())
    finally:
        lock.release()


def _holder(runs: Path) -> Busy:
    try:
        data: Busy = json.loads((runs / HOLDER).read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {"cycle": "?", "pid": 0, "host": "?", "started_at": "?"}


class Cycle:
    """One cycle's work and its record."""

    def __init__(self, cfg: LoopConfig, uri: str, runs: Path, cycle_id: str, origin: Origin,
                 report: Callable[[str], None] | None) -> None:
        self.cfg, self.uri, self.runs, self.report = cfg, uri, runs, report
        self.store = CycleStore(runs)
        self.history = self.store.all()  # cycles whose tick died are closed here
        for closed in self.store.closed:
            self._say(f"cycle {closed['id']} was left running by a tick that is gone: "
                      f"marked killed ({closed['error']})")
        self.now = time.time()
        # the runs this cycle starts: a loop's, with the cycle's id
        self.origin = make_origin(trigger="loop", cycle=cycle_id)
        # the window starts where the last judged one ended: rows too few to judge are
        # kept for the next cycle (min_new_rows accumulates), never skipped
        # (a killed cycle's window is judged again)
        start = next((c["window"]["end"] for c in reversed(self.history)
                      if c["drift"] is not None and c["status"] != "killed"), None)
        reference = next((c["reference"]["rotated_to"] for c in reversed(self.history)
                          if c["reference"]["rotated_to"]), None)
        reference = reference or (str(cfg.reference) if cfg.reference else None)
        self.record: CycleRecord = {
            "schema": CYCLE_SCHEMA, "id": cycle_id, "model": cfg.model, "status": "running",
            "started_at": utcnow(), "started_at_epoch": self.now, "ended_at": None,
            "duration_s": None, "origin": origin,
            "window": {"start": start, "end": _iso(self.now), "rows": 0},
            "monitor_run": None, "drift": None, "decision": None, "pipeline_run": None,
            "outcome": None, "reference": {"path": reference, "rotated_to": None},
            "error": None, "data": None, "trial": carried(self.history),
            "driver": this_driver()}

    def _say(self, text: str) -> None:
        if self.report:
            self.report(text)

    def run(self) -> CycleRecord:
        self.store.write(self.record)
        try:
            self._work()
            if self.record["outcome"] and self.record["outcome"]["status"] != "succeeded":
                self.record["status"] = "failed"
                self.record["error"] = (f"the retrain pipeline {self.record['pipeline_run']} "
                                        f"ended {self.record['outcome']['status']}")
            else:
                self.record["status"] = "succeeded"
        except KeyboardInterrupt:
            self.record["status"], self.record["error"] = "killed", "interrupted"
            raise
        except NbopsError as exc:
            self.record["status"], self.record["error"] = "failed", str(exc)
        except Exception as exc:  # a bug of ours: the record must still end
            self.record["status"] = "failed"
            self.record["error"] = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            self.record["ended_at"] = utcnow()
            self.record["duration_s"] = round(time.time() - self.now, 3)
            self.store.write(self.record)
        return self.record

    def _work(self) -> None:
        window = self.record["window"]
        window["rows"] = count_rows(log_folder(self.runs, self.cfg.model), window["start"],
                                    window["end"])
        self._say(f"cycle {self.record['id']}: {window['rows']} new rows since "
                  f"{window['start'] or 'the log began'}")
        if window["rows"] >= self.cfg.min_new_rows and window["rows"] > 0:
            self._monitor()
        if self.record["trial"] is not None:
            self._trial(self.record["trial"])
        drift = self.record["drift"]
        age = self._champion_age()  # the ledger, read once
        facts: Facts = {
            "now": self.now, "new_rows": window["rows"],
            "drift_action": drift["action"] if drift else None,
            "drift_share": drift["share"] if drift else None,
            "model_age_s": age,
            "retrains": [c["started_at_epoch"] for c in self.history
                         if _retrained(c) and c["status"] != "killed"],
            "interrupted": [c["started_at_epoch"] for c in self.history
                            if _retrained(c) and c["status"] == "killed"],
            "trial": blocking(self.record["trial"]), **self._performance(age)}
        decision = decide(self.cfg, facts)
        self.record["decision"] = decision
        self.store.write(self.record)
        blocked = f" (not run: {decision['blocked']})" if decision["blocked"] else ""
        self._say(f"decision: {decision['action']} ({decision['reason']}){blocked}")
        if decision["action"] != "none" and decision["blocked"] is None:
            self._retrain(self.cfg.experiment if decision["action"] == "experiment"
                          else self.cfg.retrain)

    def _monitor(self) -> None:
        from ..contract.template import resolve as resolve_template

        template = resolve_template(self.cfg.monitor_template)
        window = self.record["window"]
        offered: dict[str, Any] = {
            "current_path": str(log_folder(self.runs, self.cfg.model)),
            "current_window": f"{window['start'] or ''}/{window['end']}",
            "reference_path": self.record["reference"]["path"] or ""}
        params = {**{k: v for k, v in offered.items() if k in template.parameters},
                  **self.cfg.monitor_parameters}
        record = run(template.path, params, options=RunOptions(
            runs_dir=self.runs, tracking_uri=self.uri, origin=self.origin,
            tags={"nbops.cycle": self.record["id"]}, secret_names=secret_names(self.cfg)))
        self.record["monitor_run"] = record["id"]
        if record["status"] != "succeeded":
            message = record["error"]["message"] if record["error"] else record["status"]
            raise NbopsError(f"the monitor run {record['id']} ended {record['status']}: "
                             f"{message}")
        share = record["outputs"].get("share_drifted")
        action = str(record["outputs"].get("action", "none"))
        self.record["drift"] = {"action": action,
                                "share": float(share) if isinstance(share, (int, float))
                                else None}
        self._say(f"monitor {record['id']}: action {action}")

    def _trial(self, trial: CycleTrial) -> None:
        """Advance the challenger's trial; on its promotion, rotate the drift reference."""
        try:
            rotated = Trial(self.cfg, self.uri, self.runs, self.record["id"], self.origin,
                            self._say).advance(trial, self.record["window"]["end"])
        finally:
            self.store.write(self.record)
        if trial["status"] == "promoted":
            self.record["reference"]["rotated_to"] = rotated

    def _performance(self, age: float | None) -> PerformanceFacts:
        """With ``triggers.accuracy_drop``: the champion on labelled traffic since it
        became champion, within ``accuracy_window`` (recorded in the cycle)."""
        none: PerformanceFacts = {"accuracy": None, "expected_accuracy": None,
                                  "labelled_rows": 0}
        if self.cfg.accuracy_drop is None:
            return none
        starts = [self.now - s for s in (age, self.cfg.accuracy_window_s)
                  if s is not None]
        since = _iso(max(starts)) if starts else None
        found = measure(self.cfg.model, self.uri, self.runs,
                        log_folder(self.runs, self.cfg.model), self.cfg.labels,
                        self.cfg.target, since)
        self.record["performance"] = found
        if found is None:
            return none
        return {"accuracy": found["accuracy"], "expected_accuracy": found["expected"],
                "labelled_rows": found["rows"]}

    def _champion_age(self) -> float | None:
        """Seconds since the champion alias last moved, from the ledger (None: never)."""
        try:
            entries = ledger.read(ledger.home(self.uri), self.cfg.model)["entries"]
        except NbopsError:
            return None
        moves = [e["at"] for e in entries if e["kind"] == "move" and e["alias"] == "champion"]
        if not moves:
            return None
        return self.now - datetime.fromisoformat(moves[-1]).timestamp()

    def _window_reference(self) -> str | None:
        """The traffic this cycle's monitor judged (what the new champion now faces), as
        the next drift reference; None when no monitor ran (an age or schedule retrain)."""
        if self.record["monitor_run"] is None:
            return None
        window = self.record["window"]
        return snapshot(log_folder(self.runs, self.cfg.model),
                         f"{window['start'] or ''}/{window['end']}",
                         self.runs / FRESH_FOLDER / f"{self.record['id']}-reference.parquet")

    def _champion(self) -> int | None:
        found = registry.version_by_alias(self.cfg.model, "champion", self.uri)
        return found["version"] if found else None

    def _fresh(self) -> list[tuple[str, str]]:
        """With ``fresh_data``: write the training table (base + the labelled traffic of
        the window) and point the pipeline's data parameter at it."""
        cfg = self.cfg
        if cfg.fresh_parameter is None or cfg.labels is None:
            return []
        base = cfg.fresh_base or cfg.reference
        if base is None:
            raise NbopsError("loop.fresh_data needs a base table: set fresh_data.base or "
                             "loop.reference")
        since = (_iso(self.now - cfg.fresh_window_s) if cfg.fresh_window_s is not None
                 else None)
        data = build(base=base, log=log_folder(self.runs, cfg.model), labels=cfg.labels,
                     target=cfg.target, since=since, until=self.record["window"]["end"],
                     out_dir=self.runs / FRESH_FOLDER, name=self.record["id"])
        self.record["data"] = data
        self.store.write(self.record)
        self._say(f"fresh data: {data['base_rows']} base rows + {data['window_rows']} "
                  f"labelled rows of traffic -> {data['path']}")
        return [(cfg.fresh_parameter, data["path"])]

    def _retrain(self, pipeline: Path) -> None:
        before = self._champion()
        overrides = self._fresh()
        self._say(f"retrain: running {pipeline}")
        options = PipelineOptions(runs_dir=self.runs, tracking_uri=self.uri, force=True,
                                  origin=self.origin, report=self.report,
                                  secret_names=secret_names(self.cfg),
                                  on_start=self._linked)
        pipe = run_pipeline_with_sweeps(pipeline, options, overrides)
        self.record["pipeline_run"] = pipe["id"]
        outputs = _stage_outputs(pipe, self.runs)
        after = self._champion()
        version = next((o["version"] for o in outputs if isinstance(o.get("version"), int)),
                       None)
        promoted = after is not None and after != before
        self.record["outcome"] = {"status": pipe["status"], "version": version,
                                  "champion_before": before, "champion_after": after,
                                  "promoted": promoted}
        blocked = next((str(o["blocked"]) for o in outputs if o.get("blocked")), "")
        if not promoted and version is not None and blocked and pipe["status"] == "succeeded":
            self.record["trial"] = opened(version, after, utcnow(), self.record["id"])
            self._say(f"challenger v{version} on trial: {blocked}")
        if promoted:
            rotated = self._window_reference() or next(
                (o["reference_path"] for o in outputs
                 if isinstance(o.get("reference_path"), str)), None)
            self.record["reference"]["rotated_to"] = rotated
            was = f"v{before}" if before is not None else "(none)"
            self._say(f"promoted: champion {was} -> v{after}; drift reference now "
                      f"{rotated or '(unchanged: the pipeline gave no reference_path)'}")


    def _linked(self, pipeline_id: str) -> None:
        """The retrain pipeline's record exists: the cycle names it (a reader that finds
        this tick gone closes both)."""
        self.record["pipeline_run"] = pipeline_id
        self.store.write(self.record)


def _retrained(cycle: CycleRecord) -> bool:
    """Whether the cycle started a retrain (run, even if it failed): limits count it."""
    decision = cycle["decision"]
    return bool(decision and decision["action"] != "none" and decision["blocked"] is None)


def _stage_outputs(pipe: PipelineRecord, runs: Path) -> list[dict[str, Any]]:
    """The outputs of the pipeline's stage runs, in stage order (unreadable ones skipped)."""
    found = []
    for name in pipe["order"]:
        run_id = pipe["stages"][name].get("run_id")
        if not run_id:
            continue
        try:
            found.append(dict(get_record(run_id, runs)["outputs"]))
        except NbopsError:
            continue
    return found


def count_rows(folder: Path, start: str | None, end: str) -> int:
    """Answered rows (not failed, not a shadow's repeat) logged at or after ``start`` and
    before ``end``."""
    low = datetime.fromisoformat(start) if start else None
    high = datetime.fromisoformat(end)
    rows = 0
    for entry in entries(folder):
        try:
            at = datetime.fromisoformat(entry["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if ("error" not in entry and entry.get("variant") != "shadow"
                and (low is None or at >= low) and at < high):
            rows += 1
    return rows


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def history(runs_dir: str | Path | None = None) -> list[CycleRecord]:
    """Every cycle of the loop in this runs folder, oldest first."""
    return CycleStore(where(runs_dir)["runs_dir"]).all()

