"""Run a checked pipeline: dependency order, ``--jobs`` concurrency, caching, resume.

A stage is served from the cache when an earlier successful run had the same cache key:
the sha256 of its template content, its resolved parameters and the artifact hashes and
outputs of its upstream stages. The cached record is verified (every file re-hashed)
before it is reused. Because succeeded stages are cached, running a failed pipeline again
resumes it from the stage that failed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import params, records
from .errors import NbopsError
from .fsutil import atomic_write_json, dumps
from .pipeline import Pipeline, Stage
from .records import RunStore
from .runner import RunOptions, run, stop_on_signals

PIPELINE_SCHEMA = "nbops.pipeline/1"
_VOLATILE = {"notebook.ipynb", "kernel.log", "events.jsonl"}


@dataclass
class PipelineOptions:
    """How to run a pipeline."""

    runs_dir: Path | None = None
    tracking_uri: str | None = None
    jobs: int = 1
    force: bool = False
    progress: bool = False
    report: Callable[[str], None] | None = None
    on_drift: str | None = None  # "retrain": a stage output action=retrain re-runs training


def fingerprint(record: dict[str, Any]) -> dict[str, Any]:
    """What a downstream stage depends on: outputs and content hashes of data artifacts."""
    arts = sorted((a["path"], a["sha256"]) for a in record["artifacts"]
                  if a["path"] not in _VOLATILE)
    return {"outputs": record["outputs"], "artifacts": arts}


def cache_key(stage: Stage, resolved: dict[str, Any], upstream: dict[str, dict[str, Any]]
              ) -> str:
    payload = {"template": stage.template.sha256, "parameters": resolved,
               "upstream": {name: fingerprint(rec) for name, rec in sorted(upstream.items())}}
    return hashlib.sha256(dumps(payload, indent=None).encode()).hexdigest()


def stage_parameters(stage: Stage, done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Literal parameters plus the upstream outputs they reference, checked and typed."""
    values = dict(stage.parameters)
    for param, (source, out) in stage.refs.items():
        outputs = done[source]["outputs"]
        if out not in outputs:
            raise NbopsError(f"stage '{stage.name}' needs output '{out}' of stage '{source}', "
                             f"but run {done[source]['id']} did not produce it (it produced: "
                             f"{', '.join(outputs) or 'nothing'})")
        values[param] = outputs[out]
    resolved, _ = params.resolve(stage.template, overrides=values)
    return resolved


def find_cached(store: RunStore, key: str) -> dict[str, Any] | None:
    """The newest succeeded, intact run with this cache key."""
    for run_id in reversed(store.ids()):
        try:
            record = store.read(run_id)
        except NbopsError:
            continue
        info = record.get("pipeline") or {}
        if info.get("cache_key") == key and record["status"] == "succeeded":
            if not records.verify(store.path(run_id), record):
                return record
    return None


class PipelineRun:
    """One execution of a pipeline, recorded under ``runs/pipelines/<id>.json``."""

    def __init__(self, pipe: Pipeline, options: PipelineOptions) -> None:
        self.pipe = pipe
        self.opts = options
        self.runs_dir = records.resolve_runs_dir(options.runs_dir)
        self.store = RunStore(self.runs_dir)
        self.id = records.new_run_id(f"pipeline-{pipe.name}")
        self.done: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self.record: dict[str, Any] = {
            "schema": PIPELINE_SCHEMA, "id": self.id, "name": pipe.name, "file": str(pipe.path),
            "status": "running", "started_at": records.utcnow(), "ended_at": None,
            "duration_s": None, "order": pipe.order, "error": None, "mlflow": None,
            "stages": {n: {"status": "pending", "run_id": None, "cached": False}
                       for n in pipe.order}}
        self._lock = threading.Lock()
        self.forced: set[str] = set()

    @property
    def path(self) -> Path:
        return self.runs_dir / "pipelines" / f"{self.id}.json"

    def _save(self) -> None:
        with self._lock:
            atomic_write_json(self.path, self.record)

    def _say(self, text: str) -> None:
        if self.opts.report:
            self.opts.report(text)

    def execute(self) -> dict[str, Any]:
        """Run every stage in dependency order; stop at the first failure."""
        self._save()
        parent = self._start_parent()
        stop = threading.Event()
        with stop_on_signals(stop), ThreadPoolExecutor(max(1, self.opts.jobs)) as pool:
            self._schedule(pool, parent, stop)
            if self.opts.on_drift == "retrain" and self._retrain_requested():
                self._schedule(pool, parent, stop)
        self._finish(parent, stop)
        return self.record

    def _schedule(self, pool: ThreadPoolExecutor, parent: str | None,
                  stop: threading.Event) -> None:
        running: dict[Future[dict[str, Any]], str] = {}
        failed = False
        while True:
            if not failed and not stop.is_set():
                for name in self._ready(running.values()):
                    if len(running) >= max(1, self.opts.jobs):
                        break
                    running[pool.submit(self._stage, name, parent, stop)] = name
            if not running:
                return
            finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                state = self._collect(name, future)
                failed = failed or state not in ("succeeded", "cached")

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
            states[name].update(status="pending", run_id=None, cached=False)
        self.forced = rerun
        return True

    def _ready(self, running: Any) -> list[str]:
        busy = set(running)
        return [n for n in self.pipe.order
                if self.record["stages"][n]["status"] == "pending" and n not in busy
                and all(d in self.done for d in self.pipe.stages[n].upstream)]

    def _collect(self, name: str, future: Future[dict[str, Any]]) -> str:
        entry = self.record["stages"][name]
        try:
            result = future.result()
        except NbopsError as exc:
            entry.update(status="failed", error=str(exc))
            self._say(f"[{self._position(name)}] {name}: failed before running: {exc}")
            self._save()
            return "failed"
        state = "cached" if result["_cached"] else result["status"]
        entry.update(status=result["status"], run_id=result["id"], cached=result["_cached"])
        if result["status"] == "succeeded":
            self.done[name] = result
        else:
            entry["error"] = (result.get("error") or {}).get("message")
        took = f"{result['duration_s']:.1f} s" if result.get("duration_s") else ""
        extra = f" from run {result['id']}" if result["_cached"] else f" ({took})"
        self._say(f"[{self._position(name)}] {name}: {state}{extra}")
        self._save()
        return str(state)

    def _position(self, name: str) -> str:
        return f"{self.pipe.order.index(name) + 1}/{len(self.pipe.order)}"

    def _stage(self, name: str, parent: str | None, stop: threading.Event) -> dict[str, Any]:
        stage = self.pipe.stages[name]
        upstream = {d: self.done[d] for d in stage.upstream}
        resolved = stage_parameters(stage, upstream)
        key = cache_key(stage, resolved, upstream)
        if not self.opts.force and name not in self.forced:
            cached = find_cached(self.store, key)
            if cached is not None:
                return {**cached, "_cached": True}
        with self._lock:
            self.record["stages"][name]["status"] = "running"
        self._say(f"[{self._position(name)}] {name}: running {stage.template.name}")
        tags = {"nbops.pipeline_run": self.id, "nbops.pipeline_stage": name}
        if parent:
            tags["mlflow.parentRunId"] = parent
        options = RunOptions(runs_dir=self.runs_dir, tracking_uri=self.opts.tracking_uri,
                             cwd=self.pipe.path.parent, stop=stop, tags=tags,
                             progress=self.opts.progress and self.opts.jobs == 1,
                             pipeline={"run_id": self.id, "stage": name, "cache_key": key})
        record = run(stage.template.path, resolved, options=options)
        return {**record, "_cached": False}

    def _start_parent(self) -> str | None:
        try:
            from .tracking import Tracker, resolve_uri

            self._tracker = Tracker(resolve_uri(self.opts.tracking_uri, self.runs_dir),
                                    self.runs_dir)
            parent = self._tracker.start_parent(self.id, self.pipe.name)
            self.record["mlflow"] = {"tracking_uri": self._tracker.uri, "run_id": parent,
                                     "experiment_id": self._tracker.experiment_id}
            return parent
        except Exception as exc:  # tracking trouble never stops the pipeline
            self._say(f"warning: no MLflow parent run: {exc}")
            return None

    def _finish(self, parent: str | None, stop: threading.Event) -> None:
        states = [s["status"] for s in self.record["stages"].values()]
        if stop.is_set() or "killed" in states:
            status = "killed"
        elif all(s == "succeeded" for s in states):
            status = "succeeded"
        else:
            status = "failed"
        self.record.update(status=status, ended_at=records.utcnow(),
                           duration_s=round(time.time() - self.started, 3))
        self.record["summary"] = {label: self.done[src]["outputs"].get(out)
                                  for label, (src, out) in self.pipe.summary.items()
                                  if src in self.done}
        if status != "succeeded":
            self.record["error"] = self._resume_hint(status)
        self._save()
        if parent:
            self._tracker.finish_parent(parent, status)

    def _resume_hint(self, status: str) -> str:
        failed = [n for n, s in self.record["stages"].items()
                  if s["status"] in ("failed", "killed")]
        reused = [n for n, s in self.record["stages"].items() if s["status"] == "succeeded"]
        where = f"at stage '{failed[0]}'" if failed else "before all stages ran"
        detail = self.record["stages"][failed[0]].get("error") if failed else None
        return (f"pipeline {status} {where}" + (f": {detail}" if detail else "") +
                f". Fix the cause and run 'nbops pipeline run {self.pipe.path}' again: "
                f"{len(reused)} succeeded stage(s) will be reused from the cache.")


def run_pipeline(pipe: Pipeline | str | Path, options: PipelineOptions | None = None,
                 overrides: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """Run a pipeline (a loaded one, or the path of its file) and return its record."""
    if not isinstance(pipe, Pipeline):
        from .pipeline import load

        pipe = load(Path(pipe), overrides)
    return PipelineRun(pipe, options or PipelineOptions()).execute()


def cache_states(pipe: Pipeline, runs_dir: Path | None = None) -> dict[str, str]:
    """For ``pipeline show``: which stages a run would take from the cache."""
    store = RunStore(records.resolve_runs_dir(runs_dir))
    done: dict[str, dict[str, Any]] = {}
    states: dict[str, str] = {}
    for name in pipe.order:
        stage = pipe.stages[name]
        if any(d not in done for d in stage.upstream):
            states[name] = "will run (an upstream stage will run)"
            continue
        upstream = {d: done[d] for d in stage.upstream}
        try:
            key = cache_key(stage, stage_parameters(stage, upstream), upstream)
        except NbopsError as exc:
            states[name] = f"will run ({exc})"
            continue
        cached = find_cached(store, key)
        if cached is None:
            states[name] = "will run (no cached run)"
        else:
            done[name] = cached
            states[name] = f"cached (run {cached['id']})"
    return states
