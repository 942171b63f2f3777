"""Run a sweep: ask the strategy for trials, serve them from the cache or a scheduler,
prune from intermediate values, record everything.

Invariants:

- every trial is a normal run record (``record["sweep"]`` names the sweep and trial), and
  is cached like a pipeline stage: a trial with the same template content, parameters,
  upstream fingerprints and input files as an earlier succeeded, intact run is not run
  again; the sweep says so and records it as ``cached``;
- the sweep record (``runs/sweeps/<id>.json``) is written atomically and validated after
  every change of state;
- a failed trial never stops the sweep; the sweep ends ``failed`` only when no trial
  succeeded (then the command exits 1), or when the metric to optimise is missing from a
  trial that succeeded (a usage error: exit 2 after the record is written);
- one MLflow parent run per sweep (made before the first trial), trials are its children;
  the parent gets the best trial's metric when the sweep ends;
- this process is the only writer of the Optuna study and of the sweep record;
- a trial is pruned only on intermediate values, while it runs (see ``pruning``); a pruned
  trial keeps the last value it logged (``value`` in the sweep record, Optuna's ``PRUNED``
  value) and its run record is tagged ``nbops.trial_state=pruned`` before it is mirrored.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import params
from ..contract.secrets import declared, fingerprints
from ..contract.template import Template
from ..errors import MetricNotFound, NbopsError, UsageError
from ..execution.base import Executor
from ..execution.registry import get_executor
from ..pipeline.cache import cache_index, find_cached, run_key
from ..pipeline.scheduler import Scheduler, open_scheduler
from ..pipeline.task import StageTask
from ..records.background import mirror_queue
from ..records.lifecycle import input_hashes, make_origin
from ..records.schema import SWEEP_SCHEMA
from ..records.store import RunStore, new_run_id, resolve_runs_dir, utcnow
from ..records.sweeps import SweepStore
from ..records.types import (
    Origin,
    RunRecord,
    Status,
    SweepPipelineRef,
    SweepRecord,
    TrialEntry,
)
from ..runner import stop_on_signals
from ..tracking.base import Tracker, open_tracker
from ..tracking.check import check_uri
from ..tracking.mlflow import import_mlflow
from ..tracking.uri import NO_TRACKING, resolve_uri
from ..util.envvars import thread_budget
from .pruning import Pruning, curve, tag_pruned
from .select import best_trial
from .space import describe
from .spec import SweepSpec
from .strategies import Curve, Outcome, Strategy, make_strategy


def _import_mlflow() -> None:
    """Import MLflow ahead of the parent run (nothing is written; under the tracker's import
    lock, so opening the tracker meanwhile waits for it instead of racing it)."""
    try:
        import_mlflow()
    except Exception:  # noqa: BLE001 - the parent run reports tracking trouble itself
        return


@dataclass
class SweepOptions:
    """Where and how to run a sweep's trials."""

    runs_dir: Path | None = None
    tracking_uri: str | None = None
    jobs: int | None = None  # trials at once: 1, or with dask one per worker thread
    dask: str | None = None  # ADDRESS or local:N (see pipeline.scheduler.open_scheduler)
    executor: str = "pool"  # warm kernels, a process per trial
    cwd: Path | None = None
    timeout: float | None = None
    cell_timeout: float | None = None
    force: bool = False  # run every trial, ignoring the cache
    report: Callable[[str], None] | None = None
    base: dict[str, Any] = field(default_factory=dict)  # parameters under the swept ones
    upstream: dict[str, RunRecord] = field(default_factory=dict)  # a pipeline's inputs
    pipeline: SweepPipelineRef | None = None
    parent_tags: dict[str, str] = field(default_factory=dict)  # e.g. the pipeline's run
    poll_s: float = 0.2
    origin: Origin | None = None  # who and why (default: records.lifecycle.make_origin)
    secret_names: tuple[str, ...] = ()  # every secret a pipeline around it declares


class SweepRun:
    """One execution of a sweep, recorded under ``runs/sweeps/<id>.json``."""

    def __init__(self, template: Template, spec: SweepSpec, options: SweepOptions) -> None:
        self.template, self.spec, self.opts = template, spec, options
        self.runs_dir = resolve_runs_dir(options.runs_dir)
        self.uri = resolve_uri(options.tracking_uri, self.runs_dir)
        self.store = RunStore(self.runs_dir)
        self.sweeps = SweepStore(self.runs_dir)
        self.cwd = (options.cwd or Path.cwd()).resolve()
        self.id = new_run_id(f"sweep-{template.name}")
        self.base = {**options.base, **spec.fixed}
        # the template's secrets have values (a usage error before any trial); their keyed
        # fingerprints are part of every trial's cache key
        self.secrets = fingerprints(template, self.runs_dir)
        # withheld from the trials' kernels unless the template declares them; scrubbed
        self.secret_names = tuple(sorted({*options.secret_names, *declared([template])}))
        self.origin = options.origin or make_origin()  # every trial carries it
        self.started = time.time()
        self.tracker: Tracker | None = None
        self.parent: str | None = None
        self._fatal: str | None = None
        self._pruning: Pruning | None = None  # Optuna with pruning: trials to stop
        self._stops: dict[int, threading.Event] = {}
        self._index: dict[str, list[str]] | None = None  # cached runs by key
        self._mirrors: list[Future[RunRecord]] = []  # trials handed to the mirror queue
        self.record: SweepRecord = {
            "schema": SWEEP_SCHEMA, "id": self.id,
            "template": {"name": template.name, "path": str(template.path),
                         "sha256": template.sha256},
            "strategy": spec.strategy, "metric": spec.metric, "direction": spec.direction,
            "seed": spec.seed, "fixed": dict(spec.fixed), "space": describe(spec.space),
            "status": "running", "started_at": utcnow(), "ended_at": None, "duration_s": None,
            "error": None, "mlflow": None, "pipeline": options.pipeline, "trials": [],
            "best": None}

    def _save(self) -> None:
        self.sweeps.write(self.record)

    def _say(self, text: str) -> None:
        if self.opts.report:
            self.opts.report(text)

    def execute(self, stop: threading.Event | None = None) -> SweepRecord:
        """Run every trial; returns the final sweep record.

        Raises:
            UsageError: bad scheduler or tracking options (before anything is written);
                MetricNotFound: the metric is missing from a trial (after the record).
        """
        check_uri(self.uri, self.runs_dir)
        strategy = make_strategy(self.spec)
        if self.uri != NO_TRACKING:  # MLflow's import (seconds) while a cluster starts
            threading.Thread(target=_import_mlflow, name="nbops-import", daemon=True).start()
        scheduler = open_scheduler(self.opts.jobs, self.opts.dask)
        executor = get_executor(self.opts.executor)
        event = stop or threading.Event()
        try:
            if getattr(scheduler, "in_process", False):  # kernels start here: warm them
                self._warm(executor, scheduler.jobs)
            self._save()
            self.parent = self._start_parent()
            if self.spec.strategy == "optuna" and self.spec.prune and self.spec.metric:
                self._pruning = Pruning(self.runs_dir, self.id, self.spec.metric, strategy)
            with stop_on_signals(event):
                self._loop(strategy, scheduler, event)
        finally:
            scheduler.shutdown(cancel=event.is_set())
            executor.close()
        self._finish(event)
        if self._fatal is not None:
            raise MetricNotFound(self._fatal)
        return self.record

    def _warm(self, executor: Executor, jobs: int) -> None:
        """Let the executor start kernels for the trials (the pool preloads the template's
        imports, one spare kernel per job)."""
        executor.prepare([self.template.notebook], parallel=jobs, threads=thread_budget(jobs),
                         expected=self.spec.trials, secret_names=self.secret_names)

    def _loop(self, strategy: Strategy, scheduler: Scheduler, stop: threading.Event) -> None:
        running: dict[Future[RunRecord], int] = {}
        exhausted = False
        while True:
            while (not exhausted and not stop.is_set() and self._fatal is None
                   and len(running) < scheduler.jobs):
                asked = strategy.ask()
                if asked is None:
                    exhausted = True
                    break
                future = self._start_trial(*asked, scheduler, strategy)
                if future is not None:
                    running[future] = asked[0]
            if not running:
                if exhausted or stop.is_set() or self._fatal is not None:
                    return
                continue
            finished, _ = wait(list(running), timeout=self.opts.poll_s,
                               return_when=FIRST_COMPLETED)
            if stop.is_set() or self._fatal is not None:
                for number in running.values():
                    self._stops[number].set()
            if self._pruning is not None:
                self._prune({n: f for f, n in running.items() if f not in finished})
            for future in finished:
                self._collect(running.pop(future), future, strategy)

    def _entry(self, number: int) -> TrialEntry:
        return next(t for t in self.record["trials"] if t["number"] == number)

    def _position(self, number: int) -> str:
        return f"trial {number} [{number + 1}/{self.spec.trials}]"

    def _start_trial(self, number: int, point: dict[str, Any], scheduler: Scheduler,
                     strategy: Strategy) -> Future[RunRecord] | None:
        """Serve the trial from the cache or submit it; None when nothing was submitted."""
        entry: TrialEntry = {"number": number, "parameters": point, "status": "pending",
                             "run_id": None, "value": None, "metrics": {}, "error": None}
        self.record["trials"].append(entry)
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        try:
            resolved, _ = params.resolve(self.template, overrides={**self.base, **point})
        except UsageError as exc:
            self._told(entry, strategy, "fail", None, {"status": "failed", "error": str(exc)})
            self._say(f"{self._position(number)} ({shown}): failed before running: {exc}")
            return None
        key = run_key(self.template.sha256, resolved, self.opts.upstream, self.secrets)
        # a trial's key holds no outside state: a template that reads some always runs
        cached = (None if self.opts.force or not self.template.cache or self.template.reads
                  else self._cached(key, resolved))
        if cached is not None:
            value = self._value(number, cached)
            self._told(entry, strategy, "complete" if value is not None else "fail", value,
                       {"status": "cached", "run_id": cached["id"], "value": value,
                        "metrics": dict(cached["metrics"])}, curve(cached, self.spec.metric))
            self._say(f"{self._position(number)} ({shown}): cached from run {cached['id']} "
                      f"(same template, parameters and inputs: not run again)"
                      + self._shown_value(value))
            return None
        entry["status"] = "running"
        self._say(f"{self._position(number)} ({shown}): running")
        self._save()
        tags = {"nbops.sweep_run": self.id, "nbops.sweep_trial": str(number)}
        if self.parent:
            tags["mlflow.parentRunId"] = self.parent
        pipeline = self.opts.pipeline
        task = StageTask(
            stage=self.template.stage, template_path=self.template.path, parameters=resolved,
            cwd=self.cwd, runs_dir=self.runs_dir, tracking_uri=self.opts.tracking_uri,
            tags=tags, executor=self.opts.executor, timeout=self.opts.timeout,
            cell_timeout=self.opts.cell_timeout, threads=thread_budget(scheduler.jobs),
            mirror="driver",
            pipeline=({"run_id": pipeline["run_id"], "stage": pipeline["stage"],
                       "cache_key": key} if pipeline else None),
            sweep={"sweep_id": self.id, "trial": number, "cache_key": key},
            origin=self.origin, secret_names=self.secret_names)
        self._stops[number] = threading.Event()
        return scheduler.submit(task, self._stops[number])

    def _cached(self, key: str, resolved: dict[str, Any]) -> RunRecord | None:
        """A cached run of this trial whose input files are still the same."""
        if self._index is None:  # one pass over the store for all trials
            self._index = cache_index(self.store)
        record = find_cached(self.store, key, self._index)
        if record is None:
            return None
        now = sorted((i["parameter"], i["sha256"]) for i in input_hashes(resolved, self.cwd))
        then = sorted((i["parameter"], i["sha256"]) for i in record["inputs"])
        return record if now == then else None

    def _remember(self, record: RunRecord) -> None:
        """A trial that just succeeded serves a repeat of it later in this sweep (random
        search over choices can draw the same point twice)."""
        ref = record.get("sweep")
        if self._index is not None and ref is not None:
            self._index.setdefault(ref["cache_key"], []).insert(0, record["id"])

    def _value(self, number: int, record: RunRecord) -> float | None:
        """The metric to optimise from a succeeded run (logged metric first, then a numeric
        output); a missing one stops the sweep with a usage error."""
        metric = self.spec.metric
        if metric is None:
            return None
        if metric in record["metrics"]:
            return float(record["metrics"][metric]) + 0.0  # no "-0" in tables
        output = record["outputs"].get(metric)
        if isinstance(output, (int, float)) and not isinstance(output, bool):
            return float(output)
        logged = ", ".join(record["metrics"]) or "no metrics"
        numeric = [k for k, v in record["outputs"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        outputs = f"; numeric outputs: {', '.join(numeric)}" if numeric else ""
        if self._fatal is None:
            self._fatal = (f"metric '{metric}' was neither logged nor output by template "
                           f"'{self.template.name}' ({self._position(number)}, run "
                           f"{record['id']}): it logged {logged}{outputs}. Optimise one of "
                           f"those (--maximize/--minimize NAME), or log it in the notebook "
                           f"with nbops.log_metric('{metric}', value).")
        return None

    @staticmethod
    def _shown_value(value: float | None) -> str:
        return f": {value:.6g}" if value is not None else ""

    def _told(self, entry: TrialEntry, strategy: Strategy, outcome: Outcome,
              value: float | None, update: dict[str, Any], curve: Curve = ()) -> None:
        entry.update(update)  # type: ignore[typeddict-item]
        state = strategy.tell(entry["number"], outcome, value, curve)
        if state is not None:
            entry["optuna_state"] = state
        self._save()

    def _prune(self, running: dict[int, Future[RunRecord]]) -> None:
        """Stop the running trials Optuna prunes on their new intermediate values."""
        assert self._pruning is not None
        for number, step, value in self._pruning.check(running):
            self._stops[number].set()
            self._say(f"{self._position(number)}: pruned at step {step} "
                      f"({self.spec.metric}={value:.6g}: its best value so far is worse "
                      "than the median of completed trials at that step); stopping it")

    def _collect(self, number: int, future: Future[RunRecord], strategy: Strategy) -> None:
        entry = self._entry(number)
        self._stops.pop(number, None)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a trial's failure never stops the sweep
            text = str(exc) if isinstance(exc, NbopsError) else f"{type(exc).__name__}: {exc}"
            self._told(entry, strategy, "fail", None, {"status": "failed", "error": text})
            self._say(f"{self._position(number)}: failed before running: {text} (the sweep "
                      "goes on)")
            return
        step = self._pruning.pruned_at(number, result) if self._pruning else None
        if step is not None:  # tagged before it is mirrored
            tag_pruned(self.store, result["id"], step)
        self._mirrors.append(mirror_queue().submit(self.store.path(result["id"])))
        base = {"run_id": result["id"], "metrics": dict(result["metrics"])}
        took = f" ({result['duration_s']:.1f} s)" if result["duration_s"] else ""
        points = curve(result, self.spec.metric)
        if step is not None:
            last = points[-1][1] + 0.0 if points else None
            self._told(entry, strategy, "pruned", None,
                       {**base, "status": "pruned", "value": last}, points)
            self._say(f"{self._position(number)}: pruned, run {result['id']} stopped{took}"
                      + (f"; its last {self.spec.metric}: {last:.6g}" if last is not None
                         else ""))
        elif result["status"] == "succeeded":
            self._remember(result)
            value = self._value(number, result)
            self._told(entry, strategy, "complete" if value is not None else "fail", value,
                       {**base, "status": "succeeded", "value": value}, points)
            self._say(f"{self._position(number)}: succeeded{took}, run {result['id']}"
                      + self._shown_value(value))
        else:
            error = result["error"]["message"] if result["error"] else result["status"]
            self._told(entry, strategy, "fail", None,
                       {**base, "status": result["status"], "error": error})
            self._say(f"{self._position(number)}: {result['status']}{took}, run "
                      f"{result['id']}: {error} (the sweep goes on)")

    def _start_parent(self) -> str | None:
        try:
            self.tracker = open_tracker(self.uri, self.runs_dir)
            parent = self.tracker.start_parent(self.id, self.template.name, kind="sweep",
                                               tags=dict(self.opts.parent_tags))
        except Exception as exc:  # noqa: BLE001 - tracking trouble never stops the sweep
            self._say(f"warning: no MLflow parent run: {exc}")
            return None
        if parent is not None:
            self.record["mlflow"] = {"tracking_uri": self.uri, "run_id": parent,
                                     "experiment_id": getattr(self.tracker, "experiment_id",
                                                              None)}
            self._save()
        return parent

    def _finish(self, stop: threading.Event) -> None:
        trials = self.record["trials"]
        best = best_trial(trials, self.spec.direction)
        self.record["best"] = ({"number": best["number"], "run_id": str(best["run_id"]),
                                "value": best["value"]} if best else None)
        ok = [t for t in trials if t["status"] in ("succeeded", "cached")]
        status: Status = ("killed" if stop.is_set() else
                          "failed" if self._fatal is not None or not ok else "succeeded")
        if self._fatal is not None:
            self.record["error"] = self._fatal
        elif status == "failed":
            first = next((t["error"] for t in trials if t["error"]), None)
            self.record["error"] = ("every trial failed" + (f"; the first: {first}" if first
                                                            else ""))
        self.record.update({"status": status, "ended_at": utcnow(),
                            "duration_s": round(time.time() - self.started, 3)})
        self._save()
        for future in self._mirrors:  # the trials' runs end before their parent run
            future.result()
        if self.parent and self.tracker is not None:
            summary: dict[str, Any] = {"sweep": self.id, "trials": len(trials)}
            metrics: dict[str, float] = {}
            if best is not None and best["value"] is not None and math.isfinite(best["value"]):
                summary.update(best_trial=best["number"], best_run=best["run_id"],
                               best_parameters=best["parameters"])
                metrics[str(self.spec.metric)] = float(best["value"])
            try:
                self.tracker.finish_parent(self.parent, status, summary, metrics)
            except Exception as exc:  # noqa: BLE001
                self._say(f"warning: the MLflow parent run was not finished: {exc}")


def run_sweep(template: Template, spec: SweepSpec, options: SweepOptions | None = None,
              stop: threading.Event | None = None) -> SweepRecord:
    """Run a checked sweep and return its record (see :class:`SweepRun`)."""
    return SweepRun(template, spec, options or SweepOptions()).execute(stop)
