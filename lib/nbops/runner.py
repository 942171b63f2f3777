"""Run one template: validate, record, execute, finalize, mirror.

Everything that can be wrong with the user's input is found before the run folder is
created or a kernel starts. From then on the run record always tells the truth: it is
``running`` while the runner lives, and ends ``succeeded``, ``failed`` or ``killed``.

Layering: this module composes ``contract`` (what may be run), ``records`` (the record),
``execution`` (the kernel) and ``tracking`` (the mirror); none of those imports it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .contract import params
from .contract.secrets import fingerprints
from .contract.secrets import for_run as secrets_for_run
from .contract.template import Template
from .contract.template import resolve as resolve_template
from .execution.base import ExecutionRequest, Executor
from .execution.registry import DEFAULT_EXECUTOR, get_executor
from .records.background import MirrorProcess, mirror_timeout
from .records.background import spawn as spawn_mirror
from .records.lifecycle import finalize, internal_error, new_record
from .records.mirror import mirror
from .records.store import EVENTS_FILE, KERNEL_LOG, NOTEBOOK_FILE, RunStore, resolve_runs_dir
from .records.types import Origin, PipelineRef, RunRecord, SweepRef, TemplateRef
from .tracking.base import BackgroundTracker
from .tracking.check import check_uri
from .tracking.uri import resolve_uri
from .util.envvars import LOOP_USER, USER, kernel_env
from .util.files import encode_json
from .util.process import process_start_time
from .util.secrets import scrub_file

MirrorMode = Literal["inline", "process", "driver"]
"""``inline``: the runner mirrors the finished record to the tracking store itself (a thread
imports MLflow and opens the store while the kernel runs); ``process``: a child process
started with the run does that, mirrors the final record and reconciles it if the runner
dies (``nbops run``); with either, the runner returns once the record is mirrored.
``driver``: the runner does not mirror, and whoever submitted the run mirrors it (a
pipeline's or Dask driver's mirror queue: one writer per store) and waits for it."""


@dataclass
class RunOptions:
    """Where and how to run; one object instead of keyword arguments passed down."""

    runs_dir: Path | None = None
    tracking_uri: str | None = None
    timeout: float | None = None
    cell_timeout: float | None = None
    progress: bool = False
    cwd: Path | None = None
    executor: str | Executor = DEFAULT_EXECUTOR  # a registered name, or an instance
    stop: threading.Event | None = None
    tags: dict[str, str] = field(default_factory=dict)  # extra tracking tags (parent run, ...)
    pipeline: PipelineRef | None = None  # set when the run is a pipeline stage
    sweep: SweepRef | None = None  # set when the run is a trial of a sweep
    threads: int | None = None  # numerical thread pools in the kernel (OMP_NUM_THREADS, ...)
    mirror: MirrorMode = "inline"
    origin: Origin | None = None  # who and why (default: records.lifecycle.make_origin)
    # the secrets every template of this run's pipeline, sweep or loop declares: withheld
    # from its kernel unless its own template declares them, scrubbed from what it writes
    secret_names: tuple[str, ...] = ()


def run(template: str | Path, parameters: Mapping[str, Any] | None = None, *,
        cli_params: Iterable[tuple[str, str]] = (), params_file: Path | None = None,
        options: RunOptions | None = None) -> RunRecord:
    """Execute a template and return its final run record.

    Raises:
        TemplateError, ParameterError, ConfigError, UnknownNameError: bad input (nothing
            written, no kernel).
    """
    opts = options or RunOptions()
    if opts.mirror != "process":
        return _run(template, parameters, cli_params, params_file, opts, None)
    wait = mirror_timeout()
    # the mirror child imports MLflow while the inputs are checked and the kernel runs
    child = spawn_mirror(resolve_uri(opts.tracking_uri, resolve_runs_dir(opts.runs_dir)))
    try:
        record = _run(template, parameters, cli_params, params_file, opts, child)
    finally:  # the record is final (or none was made): the child mirrors it, we wait
        mirrored = child.close(wait)
    return mirrored or record


def _run(template: str | Path, parameters: Mapping[str, Any] | None,
         cli_params: Iterable[tuple[str, str]], params_file: Path | None, opts: RunOptions,
         child: MirrorProcess | None) -> RunRecord:
    tpl = resolve_template(template)
    resolved, given = params.resolve(tpl, cli=cli_params, file=params_file, overrides=parameters)
    # from the environment or the credentials file only: never a parameter
    secrets = secrets_for_run(tpl, opts.secret_names)
    secret_values = secrets.values
    executor = get_executor(opts.executor) if isinstance(opts.executor, str) else opts.executor
    notebook = params.inject(tpl.notebook, given)
    notebook.metadata.setdefault("nbops", {})["parameters"] = encode_json(resolved)
    # the executed copy is a record, not a source: unpaired, so that saving it in JupyterLab
    # never writes a jupytext twin into the run folder
    notebook.metadata.pop("jupytext", None)
    runs_dir = resolve_runs_dir(opts.runs_dir)
    uri = resolve_uri(opts.tracking_uri, runs_dir)
    store = RunStore(runs_dir)
    cwd = (opts.cwd or Path.cwd()).resolve()
    request = ExecutionRequest(notebook=notebook, output_path=Path(), cwd=cwd, env={},
                               cell_timeout=opts.cell_timeout, run_timeout=opts.timeout,
                               progress=opts.progress, kernel_name=tpl.kernel_name,
                               scrubber=secrets.scrubber if secrets.scrubber else None)
    executor.check(request)  # e.g. the template's kernel is installed; before any record
    check_uri(uri, runs_dir)  # in seconds: no kernel runs for a mirror that cannot happen
    tracker = (BackgroundTracker(uri, runs_dir)  # MLflow imports and opens its store meanwhile
               if opts.mirror == "inline" else None)
    record = new_record(tpl.stage, cwd, template=_template_ref(tpl), parameters=resolved,
                        origin=opts.origin)
    record["tags"], record["pipeline"] = dict(opts.tags), opts.pipeline
    if opts.sweep is not None:
        record["sweep"] = opts.sweep
    if secret_values:
        record["secrets"] = fingerprints(tpl, runs_dir, secret_values)
    record["mlflow"] = {"tracking_uri": uri, "experiment_id": None, "run_id": None,
                        "synced": False}
    run_dir = store.create(record)
    if child is not None:
        child.attach(run_dir)
    request.output_path, request.kernel_log = run_dir / NOTEBOOK_FILE, run_dir / KERNEL_LOG
    request.env = secrets.kernel_env(kernel_env(run_dir, uri, opts.threads))
    if record["origin"]["trigger"] == "loop":  # the loop proposes in its own name, so the
        request.env[USER] = LOOP_USER          # person who runs it may approve
    request.on_kernel_start = lambda pid: _note_kernel(store, record, pid)
    try:
        with stop_on_signals(opts.stop) as stop:
            result = executor.execute(request, stop)
    except BaseException as exc:  # a bug of ours must not leave the record 'running'
        scrub_file(run_dir / EVENTS_FILE, secrets.scrubber)
        finalize(store, record, "failed", secrets.scrubber.value(internal_error(exc)))
        raise
    record["runner"]["kernel_pid"] = result.kernel_pid
    # the kernel scrubbed its events of its own secrets; the driver's others too
    scrub_file(run_dir / EVENTS_FILE, secrets.scrubber)
    finalize(store, record, result.status, result.error, declared_outputs=tpl.outputs)
    if tracker is not None:
        mirror(tracker, store, record)
    return record


def _note_kernel(store: RunStore, record: RunRecord, pid: int) -> None:
    """Put the kernel's pid (and start tick) in the record as soon as it runs, so that a
    runner that dies later leaves enough to end the kernel's process tree."""
    record["runner"]["kernel_pid"] = pid
    record["runner"]["kernel_start"] = process_start_time(pid)
    store.write(record)


def _template_ref(tpl: Template) -> TemplateRef:
    return {"name": tpl.name, "path": str(tpl.path), "sha256": tpl.sha256}


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
