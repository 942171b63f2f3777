"""Run a checked pipeline: dependency order, ``--jobs`` concurrency, caching, resume.

The pipeline run is the coordinator: it resolves each ready stage's parameters from its
upstream records, looks the stage up in the cache, and hands the rest to a scheduler as
:class:`~nbops.pipeline.task.StageTask` data. Because succeeded stages are cached, running
a failed pipeline again resumes it from the stage that failed. The pipeline record is
written (validated) after every change of state, a stage's start included; it names its
driver (this process), so a reader marks it ``killed`` once that process is gone
(``records.pipelines``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.secrets import declared, fingerprints
from ..errors import NbopsError, PipelineError
from ..execution.base import Executor
from ..execution.registry import get_executor
from ..records.background import mirror_queue
from ..records.lifecycle import make_origin
from ..records.mirror import mirror_lock
from ..records.pipelines import PipelineStore
from ..records.reconcile import this_driver
from ..records.schema import PIPELINE_SCHEMA
from ..records.store import RunStore, new_run_id, resolve_runs_dir, utcnow
from ..records.types import Origin, PipelineRecord, RunRecord, StageState, Status
from ..runner import stop_on_signals
from ..tracking.base import Tracker, open_tracker
from ..tracking.check import check_uri
from ..tracking.uri import resolve_uri
from ..util.envvars import thread_budget
from .cache import Decision, Lookup, stage_parameters
from .hooks import StageSweeper, SweepStageContext
from .scheduler import DEFAULT_SCHEDULER, Scheduler, get_scheduler, open_scheduler
from .spec import Pipeline, load
from .task import StageTask

PIPELINE_EXECUTOR = "pool"  # warm kernels: stages still run in processes of their own


@dataclass
class PipelineOptions:
    """How to run a pipeline."""

    runs_dir: Path | None = None
    tracking_uri: str | None = None
    jobs: int | None = None  # stages at once; None: 1, or with ``dask`` one per worker thread
    force: bool = False
    progress: bool = False
    report: Callable[[str], None] | None = None
    on_drift: str | None = None  # "retrain": a stage output action=retrain re-runs training
    executor: str = PIPELINE_EXECUTOR
    scheduler: str = DEFAULT_SCHEDULER
    dask: str | None = None  # --dask ADDRESS|local:N (wins over ``scheduler``)
    sweeper: StageSweeper | None = None  # runs stages with a ``sweep:`` block (nbops.sweep)
    origin: Origin | None = None  # who and why (default: records.lifecycle.make_origin)
    # secrets of templates around the pipeline (a loop's): withheld and scrubbed like its own
    secret_names: tuple[str, ...] = ()
    # told the pipeline run's id once its record exists (a loop cycle links it at once)
    on_start: Callable[[str], None] | None = None


class PipelineRun:
    """One execution of a pipeline, recorded under ``runs/pipelines/<id>.json``."""

    def __init__(self, pipe: Pipeline, options: PipelineOptions) -> None:
        self.pipe = pipe
        self.opts = options
        self.runs_dir = resolve_runs_dir(options.runs_dir)
        self.uri = resolve_uri(options.tracking_uri, self.runs_dir)
        self.store = RunStore(self.runs_dir)
        self.pipelines = PipelineStore(self.runs_dir)
        self.id = new_run_id(f"pipeline-{pipe.name}")
        self.done: dict[str, RunRecord] = {}
        self.cached: set[str] = set()
        self.forced: set[str] = set()
        self.mirrors: dict[str, Future[RunRecord]] = {}  # stage -> its record's mirror
        self.lookup = Lookup(self.store, self.uri, pipe.path.parent,
                             ready=self._store_ready)
        self.decisions: dict[str, Decision] = {}  # stage -> what the cache said of it
        self._warmed = False
        self.origin = options.origin or make_origin()  # every stage run carries it
        # withheld from every stage that does not declare them; scrubbed from every stage
        self.secret_names = tuple(sorted({*options.secret_names, *declared(
            s.template for s in pipe.stages.values())}))
        self.pending_mirrors: list[Future[RunRecord]] = []
        self.started = time.time()
        self.tracker: Tracker | None = None
        self._parent: Future[str | None] | None = None  # made when a stage first runs
        self._local = False  # stages run in this process (their mirrors are ours to do)
        # one thread for tracking work off the critical path: the parent run, then the
        # stages' mirrors in the order they finished
        self._tracking = ThreadPoolExecutor(1, thread_name_prefix="nbops-pipeline-tracking")
        stages: dict[str, StageState] = {n: {"status": "pending", "run_id": None, "cached": False}
                                         for n in pipe.order}
        self.record: PipelineRecord = {
            "schema": PIPELINE_SCHEMA, "id": self.id, "name": pipe.name, "file": str(pipe.path),
            "status": "running", "started_at": utcnow(), "ended_at": None,
            "duration_s": None, "order": pipe.order, "error": None, "mlflow": None,
            "stages": stages, "driver": this_driver()}

    @property
    def path(self) -> Path:
        return self.pipelines.path(self.id)

    def _save(self) -> None:
        self.pipelines.write(self.record)

    def _say(self, text: str) -> None:
        if self.opts.report:
            self.opts.report(text)

    def execute(self) -> PipelineRecord:
        """Run every stage in dependency order; stop at the first failure."""
        check_uri(self.uri, self.runs_dir)
        self._check_sweeps()
        # every stage's secrets have values (a usage error before anything runs); their
        # keyed fingerprints are part of the stages' cache keys
        self.lookup.secrets = {n: fingerprints(s.template, self.runs_dir)
                               for n, s in self.pipe.stages.items()}
        scheduler = self._open_scheduler()
        self._save()
        if self.opts.on_start is not None:
            self.opts.on_start(self.id)
        stop = threading.Event()
        executor = get_executor(self.opts.executor)
        try:
            with stop_on_signals(stop):
                self._local = bool(getattr(scheduler, "in_process", False))
                self._schedule(scheduler, stop, executor)
                if self.opts.on_drift == "retrain" and self._retrain_requested():
                    self._schedule(scheduler, stop, executor)
        finally:
            scheduler.shutdown(cancel=stop.is_set())
            executor.close()
        self._finish(self._parent.result() if self._parent else None, stop)
        self._tracking.shutdown(wait=True)
        return self.record

    def _warm(self, executor: Executor, jobs: int) -> None:
        """Once a stage is to run here, let the executor start kernels for the stages not
        yet done (the pool preloads their imports); an up-to-date pipeline starts none."""
        if self._warmed or not self._local:
            return
        self._warmed = True
        notebooks = [self.pipe.stages[n].template.notebook for n in self.pipe.order
                     if n not in self.done]
        executor.prepare(notebooks, parallel=jobs, threads=thread_budget(jobs),
                         expected=len(notebooks), secret_names=self.secret_names)

    def _open_scheduler(self) -> Scheduler:
        """The scheduler, once it has checked that its workers see our folders."""
        scheduler = (open_scheduler(self.opts.jobs, self.opts.dask) if self.opts.dask else
                     get_scheduler(self.opts.scheduler, self.opts.jobs or 1))
        templates = [s.template.path for s in self.pipe.stages.values()]
        try:
            scheduler.check_paths([self.pipe.path.parent, *templates], [self.runs_dir])
        except BaseException:
            scheduler.shutdown(cancel=True)
            raise
        return scheduler

    def _schedule(self, scheduler: Scheduler, stop: threading.Event,
                  executor: Executor) -> None:
        running: dict[Future[RunRecord], str] = {}
        failed = False
        while True:
            if not failed and not stop.is_set():
                for name in self._ready(running.values()):
                    if len(running) >= scheduler.jobs:
                        break
                    future = self._start_stage(name, scheduler, stop, executor)
                    if future is None:
                        failed = failed or self.record["stages"][name]["status"] == "failed"
                        continue
                    running[future] = name
            if not running:
                if failed or stop.is_set() or not self._ready(()):
                    return
                continue
            finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                failed = self._collect(name, future) not in ("succeeded",) or failed

    def _start_stage(self, name: str, scheduler: Scheduler, stop: threading.Event,
                     executor: Executor) -> Future[RunRecord] | None:
        """Serve the stage from the cache, or submit it; None when nothing was submitted."""
        stage = self.pipe.stages[name]
        entry = self.record["stages"][name]
        upstream = {d: self.done[d] for d in stage.upstream}
        for dependency in stage.upstream:  # a stage may read its inputs' tracked runs
            if dependency in self.mirrors:
                self.mirrors[dependency].result()
        try:
            resolved = stage_parameters(stage, upstream, self.store.root)
        except NbopsError as exc:
            entry.update({"status": "failed", "error": str(exc)})
            self._say(f"[{self._position(name)}] {name}: failed before running: {exc}")
            self._save()
            return None
        if stage.sweep is not None:
            self._warm(executor, scheduler.jobs)
            return self._start_sweep(name, resolved, upstream, scheduler, stop)
        forced = ("--force" if self.opts.force else
                  "retrain after drift" if name in self.forced else None)
        decision = self.decisions[name] = self.lookup.decide(stage, resolved, upstream, forced)
        cached = decision.cached
        if cached is not None:
            self.done[name] = cached
            self.cached.add(name)
            entry.update({"status": "succeeded", "run_id": cached["id"], "cached": True})
            self._say(f"[{self._position(name)}] {name}: cached from run {cached['id']}")
            self._save()
            return None
        entry.update({"status": "running", "reason": decision.reason})
        self._save()
        self._warm(executor, scheduler.jobs)
        self._say(f"[{self._position(name)}] {name}: running {stage.template.name} "
                  f"({decision.reason})")
        tags = {"nbops.pipeline_run": self.id, "nbops.pipeline_stage": name}
        if self._local and not decision.reads:  # the parent is made meanwhile; our
            self._parent_soon()                  # mirror of the stage links it
        elif self._local:  # the kernel opens the store: it must exist (made with the parent)
            self._parent_run()
        elif parent := self._parent_run():  # a remote worker's record carries it from start
            tags["mlflow.parentRunId"] = parent
        task = StageTask(
            stage=name, template_path=stage.template.path, parameters=resolved,
            cwd=self.pipe.path.parent, runs_dir=self.runs_dir, tracking_uri=self.opts.tracking_uri,
            pipeline={"run_id": self.id, "stage": name, "cache_key": decision.key,
                      "inputs_key": decision.inputs_key}, tags=tags,
            executor=self.opts.executor, progress=self.opts.progress and scheduler.jobs == 1,
            threads=thread_budget(scheduler.jobs), retryable=stage.retryable, mirror="driver",
            origin=self.origin, secret_names=self.secret_names)
        return scheduler.submit(task, stop)

    def _check_sweeps(self) -> None:
        """Every ``sweep:`` block is checked before anything is written or run."""
        for name in self.pipe.order:
            stage = self.pipe.stages[name]
            if stage.sweep is None:
                continue
            if self.opts.sweeper is None:
                raise PipelineError(f"stage '{name}' has a 'sweep:' block, and this pipeline "
                                    "run has no sweeper: run it with 'nbops pipeline run' or "
                                    "nbops.sweep.stage.run_pipeline_with_sweeps()")
            self.opts.sweeper.check(stage)

    def _start_sweep(self, name: str, resolved: dict[str, Any],
                     upstream: dict[str, RunRecord], scheduler: Scheduler,
                     stop: threading.Event) -> Future[RunRecord]:
        """Hand a ``sweep:`` stage to the sweeper; its future is the best trial's record."""
        assert self.opts.sweeper is not None  # checked before the run started
        entry = self.record["stages"][name]
        entry["status"] = "running"
        context = SweepStageContext(
            stage=self.pipe.stages[name], parameters=resolved, upstream=upstream,
            pipeline_run=self.id, cwd=self.pipe.path.parent, runs_dir=self.runs_dir,
            tracking_uri=self.opts.tracking_uri, jobs=scheduler.jobs,
            executor=self.opts.executor, force=self.opts.force or name in self.forced,
            parent_run=self._parent_run(), report=self.opts.report, origin=self.origin,
            secret_names=self.secret_names)
        self._save()
        sweep_id, future = self.opts.sweeper.submit(context, stop)
        entry["sweep_id"] = sweep_id
        self._say(f"[{self._position(name)}] {name}: sweep {sweep_id}")
        self._save()
        return future

    def _retrain_requested(self) -> bool:
        """If a stage said ``action: retrain``, force the train stages and everything after."""
        states = self.record["stages"]
        if any(s["status"] != "succeeded" for s in states.values()):
            return False
        trigger = next((n for n in self.pipe.order
                        if self.done[n]["outputs"].get("action") == "retrain"), None)
        train = [n for n in self.pipe.order if self.pipe.stages[n].template.stage == "train"]
        if trigger is None or not train:
            return False
        rerun = set(train)
        for name in self.pipe.order:  # order is topological: descendants follow
            if set(self.pipe.stages[name].upstream) & rerun:
                rerun.add(name)
        ordered = [n for n in self.pipe.order if n in rerun]
        self.record["retrained"] = {"trigger": trigger, "action": "retrain", "stages": ordered,
                                    "previous_runs": {n: states[n]["run_id"] for n in ordered}}
        self._say(f"drift: stage '{trigger}' asks to retrain; running {', '.join(ordered)} again")
        for name in ordered:
            self.done.pop(name)
            self.cached.discard(name)
            states[name].update({"status": "pending", "run_id": None, "cached": False})
        self.forced = rerun
        return True

    def _ready(self, running: Iterable[str]) -> list[str]:
        busy = set(running)
        return [n for n in self.pipe.order
                if self.record["stages"][n]["status"] == "pending" and n not in busy
                and all(d in self.done for d in self.pipe.stages[n].upstream)]

    def _collect(self, name: str, future: Future[RunRecord]) -> str:
        entry = self.record["stages"][name]
        try:
            result = future.result()
        except NbopsError as exc:
            entry.update({"status": "failed", "error": str(exc)})
            self._say(f"[{self._position(name)}] {name}: failed before running: {exc}")
            self._save()
            return "failed"
        entry.update({"status": result["status"], "run_id": result["id"], "cached": False})
        if result["status"] == "succeeded" and name in self.decisions:
            result = self._keyed_after(name, result)
        self.mirrors[name] = self._tracking.submit(self._mirror_stage,
                                                   self.store.path(result["id"]))
        self.pending_mirrors.append(self.mirrors[name])
        if result["status"] == "succeeded":
            self.done[name] = result
        else:
            entry["error"] = result["error"]["message"] if result["error"] else None
        took = f" ({result['duration_s']:.1f} s)" if result["duration_s"] else ""
        self._say(f"[{self._position(name)}] {name}: {result['status']}{took}")
        self._save()
        return result["status"]

    def _keyed_after(self, name: str, result: RunRecord) -> RunRecord:
        """A stage that reads outside state is cached under that state as its run left it
        (``register`` changes what it reads): its record's key is rewritten so."""
        decision = self.decisions[name]
        if not decision.reads or result["pipeline"] is None:
            return result
        key, state = self.lookup.state_after(decision)
        with mirror_lock(self.runs_dir):
            record = self.store.read(result["id"])
            assert record["pipeline"] is not None
            record["pipeline"].update({"cache_key": key, "reads": state})
            self.store.write(record)
        return record

    def _position(self, name: str) -> str:
        return f"{self.pipe.order.index(name) + 1}/{len(self.pipe.order)}"

    def _parent_soon(self) -> Future[str | None]:
        """The pipeline's MLflow parent run, started the first time a stage really runs
        (no empty parent runs), in the tracking thread (MLflow's import takes seconds)."""
        if self._parent is None:
            self._parent = self._tracking.submit(self._start_parent)
        return self._parent

    def _store_ready(self) -> None:
        """Before the registry is read here: a store being created meanwhile is finished."""
        if self._parent is not None:
            self._parent.result()

    def _parent_run(self) -> str | None:
        return self._parent_soon().result()

    def _mirror_stage(self, run_dir: Path) -> RunRecord:
        """Mirror a finished stage run (tracking thread), as a child of the parent run."""
        parent = self._parent.result() if self._parent else None  # done: same thread
        if parent:
            with mirror_lock(self.runs_dir):
                record = self.store.read(run_dir.name)
                if not (record["mlflow"] and record["mlflow"]["synced"]):
                    record["tags"].setdefault("mlflow.parentRunId", parent)
                    self.store.write(record)
        return mirror_queue().submit(run_dir).result()

    def _start_parent(self) -> str | None:
        try:
            self.tracker = open_tracker(self.uri, self.runs_dir)
            parent = self.tracker.start_parent(self.id, self.pipe.name)
            if parent is not None:
                self.record["mlflow"] = {"tracking_uri": self.uri, "run_id": parent,
                                         "experiment_id": getattr(self.tracker,
                                                                  "experiment_id", None)}
            return parent
        except Exception as exc:  # tracking trouble never stops the pipeline
            self._say(f"warning: no MLflow parent run: {exc}")
            return None

    def _finish(self, parent: str | None, stop: threading.Event) -> None:
        states = [s["status"] for s in self.record["stages"].values()]
        status: Status
        if stop.is_set() or "killed" in states:
            status = "killed"
        elif all(s == "succeeded" for s in states):
            status = "succeeded"
        else:
            status = "failed"
        self.record.update({"status": status, "ended_at": utcnow(),
                            "duration_s": round(time.time() - self.started, 3)})
        for future in self.pending_mirrors:  # the children end before their parent run
            future.result()
        self.record["summary"] = {label: self.done[src]["outputs"].get(out)
                                  for label, (src, out) in self.pipe.summary.items()
                                  if src in self.done}
        if status != "succeeded":
            self.record["error"] = self._resume_hint(status)
        self._save()
        if parent and self.tracker is not None:
            self.tracker.finish_parent(parent, status, self.record["summary"])

    def _resume_hint(self, status: str) -> str:
        stages = self.record["stages"]
        failed = [n for n, s in stages.items() if s["status"] in ("failed", "killed")]
        reused = [n for n, s in stages.items() if s["status"] == "succeeded"]
        where = f"at stage '{failed[0]}'" if failed else "before all stages ran"
        detail = stages[failed[0]].get("error") if failed else None
        return (f"pipeline {status} {where}" + (f": {detail}" if detail else "") +
                f". Fix the cause and run 'nbops pipeline run {self.pipe.path}' again: "
                f"{len(reused)} succeeded stage(s) will be reused from the cache.")


def run_pipeline(pipe: Pipeline | str | Path, options: PipelineOptions | None = None,
                 overrides: Iterable[tuple[str, str]] = ()) -> PipelineRecord:
    """Run a pipeline (a loaded one, or the path of its file) and return its record."""
    if not isinstance(pipe, Pipeline):
        pipe = load(Path(pipe), overrides)
    return PipelineRun(pipe, options or PipelineOptions()).execute()
