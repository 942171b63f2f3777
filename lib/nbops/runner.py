"""Run one template: validate, record, execute, finalize, mirror to MLflow.

Everything that can be wrong with the user's input is found before the run folder is
created or a kernel starts. From then on the run record always tells the truth: it is
``running`` while the runner lives, and ends ``succeeded``, ``failed`` or ``killed``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contract, params, records
from .environment import capture, process_start_time
from .executors import ExecutionRequest, Executor
from .fsutil import sha256_file
from .records import NOTEBOOK_FILE, RunStore


@dataclass
class RunOptions:
    """Where and how to run; one object instead of keyword arguments passed down."""

    runs_dir: Path | None = None
    tracking_uri: str | None = None
    timeout: float | None = None
    cell_timeout: float | None = None
    progress: bool = False
    cwd: Path | None = None
    executor: Executor | None = None
    stop: threading.Event | None = None
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags (parent run, ...)
    pipeline: dict[str, Any] | None = None  # {run_id, stage, cache_key} when in a pipeline


def run(template: str | Path, parameters: Mapping[str, Any] | None = None, *,
        cli_params: Iterable[tuple[str, str]] = (), params_file: Path | None = None,
        options: RunOptions | None = None) -> dict[str, Any]:
    """Execute a template and return its final run record.

    Raises:
        TemplateError, ParameterError, ConfigError: bad input (nothing written, no kernel).
    """
    opts = options or RunOptions()
    tpl = contract.resolve(template)
    resolved, given = params.resolve(tpl, cli=cli_params, file=params_file, overrides=parameters)
    notebook = params.inject(tpl.notebook, given)
    notebook.metadata.setdefault("nbops", {})["parameters"] = _jsonable(resolved)
    runs_dir = records.resolve_runs_dir(opts.runs_dir)
    from .tracking import TrackerFuture, resolve_uri

    uri = resolve_uri(opts.tracking_uri, runs_dir)
    tracker = TrackerFuture(uri, runs_dir)  # MLflow imports and opens its store meanwhile
    store = RunStore(runs_dir)
    cwd = (opts.cwd or Path.cwd()).resolve()
    record = new_record(tpl.stage, cwd, template=tpl, parameters=resolved)
    record["tags"], record["pipeline"] = dict(opts.tags), opts.pipeline
    record["mlflow"] = {"tracking_uri": uri, "experiment_id": None, "run_id": None,
                        "synced": False}
    run_dir = store.create(record)
    request = ExecutionRequest(
        notebook=notebook, output_path=run_dir / NOTEBOOK_FILE, cwd=cwd,
        env=kernel_env(run_dir, uri), cell_timeout=opts.cell_timeout, run_timeout=opts.timeout,
        progress=opts.progress, kernel_log=run_dir / "kernel.log")
    executor = opts.executor or _default_executor()
    try:
        with stop_on_signals(opts.stop) as stop:
            result = executor.execute(request, stop)
    except BaseException as exc:  # a bug of ours must not leave the record 'running'
        finalize(store, record, "failed", {"ename": type(exc).__name__, "evalue": str(exc),
                                           "cell_index": None,
                                           "message": f"nbops internal error: {exc!r}"})
        raise
    record["runner"]["kernel_pid"] = result.kernel_pid
    finalize(store, record, result.status, result.error, declared_outputs=tpl.outputs)
    mirror(tracker, store, record)
    return record


def _default_executor() -> Executor:
    from .local_executor import LocalExecutor

    return LocalExecutor()


def _jsonable(value: Any) -> Any:
    from .fsutil import encode_json

    return encode_json(value)


def new_record(stage: str, cwd: Path, *, template: contract.Template | None,
               parameters: dict[str, Any]) -> dict[str, Any]:
    """A fresh ``running`` record for this process."""
    tpl = None
    if template is not None:
        tpl = {"name": template.name, "path": str(template.path), "sha256": template.sha256}
    return {
        "schema": records.SCHEMA, "id": records.new_run_id(stage), "stage": stage,
        "template": tpl, "parameters": parameters, "status": "running",
        "started_at": records.utcnow(), "started_at_epoch": time.time(), "ended_at": None,
        "duration_s": None, "metrics": {}, "metric_history": {}, "logged_params": {},
        "outputs": {}, "artifacts": [], "models": {}, "inputs": input_hashes(parameters, cwd),
        "warnings": [], "environment": capture(cwd), "error": None, "mlflow": None,
        "runner": {"pid": os.getpid(), "host": socket.gethostname(),
                   "proc_start": process_start_time(os.getpid()), "kernel_pid": None},
    }


def input_hashes(parameters: Mapping[str, Any], cwd: Path) -> list[dict[str, Any]]:
    """sha256 of every parameter value that names an existing file (input data)."""
    found = []

    def visit(name: str, value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                visit(name, item)
        elif isinstance(value, str) and 0 < len(value) < 4096 and "\x00" not in value:
            try:
                path = Path(value) if Path(value).is_absolute() else cwd / value
                if path.is_file():
                    found.append({"parameter": name, "path": str(path),
                                  "sha256": sha256_file(path)})
            except OSError:
                pass

    for name, value in parameters.items():
        visit(name, value)
    return found


def kernel_env(run_dir: Path, tracking_uri: str | None = None) -> dict[str, str]:
    from .recording import RUN_DIR_ENV

    env = dict(os.environ)
    env[RUN_DIR_ENV] = str(run_dir)
    if tracking_uri:  # mlflow calls in the notebook (the registry) use the run's store
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    lib = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (lib, env.get("PYTHONPATH", "")) if p)
    return env


@contextmanager
def stop_on_signals(stop: threading.Event | None) -> Iterator[threading.Event]:
    """SIGTERM and Ctrl-C set the stop event instead of unwinding mid-execution."""
    event = stop or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    def handler(signum: int, frame: Any) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield event
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def finalize(store: RunStore, record: dict[str, Any], status: str,
             error: dict[str, Any] | None, declared_outputs: Iterable[str] = ()) -> None:
    """Fold the notebook's events into the record, hash the folder, write the end state."""
    run_dir = store.path(record["id"])
    records.fold_events(record, records.read_events(run_dir))
    missing = [o for o in declared_outputs if o not in record["outputs"]]
    if missing and status == "succeeded":
        record["warnings"].append(f"declared outputs not produced: {', '.join(missing)}")
    record["status"] = status
    record["error"] = error
    now = time.time()
    record["ended_at"] = records.utcnow()
    record["duration_s"] = round(now - record.get("started_at_epoch", now), 3)
    record["artifacts"] = records.hash_artifacts(run_dir)
    if record.get("mlflow"):
        record["mlflow"]["synced"] = False
    store.write(record)


def mirror(tracker: Any, store: RunStore, record: dict[str, Any]) -> None:
    """Create and finish the record's MLflow run; a tracking failure is a warning only.

    The MLflow run is created once the outcome is known (with the real start time), so a
    run record and its MLflow run never disagree about the status.
    """
    try:
        if hasattr(tracker, "get"):
            tracker = tracker.get()
        if not record["mlflow"].get("run_id"):
            record["mlflow"].update(tracker.start(record))
        tracker.finish(record, store.path(record["id"]))
        record["mlflow"]["synced"] = True
    except Exception as exc:  # the record on disk stays the source of truth
        record["warnings"].append(f"MLflow mirror failed: {type(exc).__name__}: {exc}")
        print(f"nbops: warning: could not mirror run {record['id']} to MLflow: {exc}",
              file=sys.stderr)
    store.write(record)


def start_interactive_run() -> Path:
    """Open a run record for a notebook used interactively (no runner around it)."""
    store = RunStore(records.resolve_runs_dir())
    cwd = Path.cwd()
    record = new_record("interactive", cwd, template=None, parameters={})
    return store.create(record)


def finish_interactive_run(run_dir: Path, status: str = "succeeded",
                           at_exit: bool = False) -> None:
    """Close an interactive run record, then mirror it to MLflow.

    At interpreter exit MLflow can no longer be imported (threads are shut down), so the
    mirror then runs in a short child process.
    """
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    finalize(store, record, status, None)
    if at_exit:
        code = "import sys; from nbops.runner import sync_to_mlflow; sync_to_mlflow(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, str(run_dir)], env=kernel_env(run_dir),
                       check=False, timeout=600)
    else:
        sync_to_mlflow(run_dir)


def sync_to_mlflow(run_dir: str | Path) -> None:
    """Mirror a finished record to MLflow (interactive runs, runs whose runner died)."""
    from .tracking import Tracker, resolve_uri

    run_dir = Path(run_dir)
    store = RunStore(run_dir.parent)
    record = store.read(run_dir.name)
    info = record.get("mlflow") or {}
    uri = info.get("tracking_uri") or resolve_uri(None, run_dir.parent)
    record["mlflow"] = {"tracking_uri": uri, "experiment_id": info.get("experiment_id"),
                        "run_id": info.get("run_id"), "synced": False}
    mirror(Tracker(uri, run_dir.parent), store, record)
