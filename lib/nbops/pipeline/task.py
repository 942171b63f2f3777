"""A stage task: everything a worker needs to run one stage, and nothing more.

A :class:`StageTask` is plain, picklable data (template path, resolved parameters, the
kernel's working folder, the run store, tracking URI, tags, limits, executor name): no
locks, no bound methods, no open files. :func:`run_task` runs it anywhere nbops is
installed and the paths are visible: a thread here, a process, or a remote worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..execution.registry import DEFAULT_EXECUTOR
from ..records.types import Origin, PipelineRef, RunRecord, SweepRef
from ..runner import MirrorMode, RunOptions, run


@dataclass(frozen=True)
class StageTask:
    """One stage run (or one sweep trial), as data."""

    stage: str
    template_path: Path
    parameters: dict[str, Any]
    cwd: Path
    runs_dir: Path
    pipeline: PipelineRef | None = None  # a stage of a pipeline run
    tracking_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    executor: str = DEFAULT_EXECUTOR
    timeout: float | None = None
    cell_timeout: float | None = None
    progress: bool = False
    threads: int | None = None  # thread budget of the kernel (see util.envvars.thread_budget)
    mirror: MirrorMode = "inline"
    retryable: bool = False  # may run again after its worker was lost (pipeline.yaml)
    sweep: SweepRef | None = None  # a trial of a sweep (see nbops.sweep)
    origin: Origin | None = None  # who started the pipeline or sweep, and why
    # the secret names every template of the pipeline or sweep declares (names only: the
    # values are read where the stage runs), withheld from this stage unless it declares them
    secret_names: tuple[str, ...] = ()


def run_task(task: StageTask, stop: threading.Event | None = None) -> RunRecord:
    """Run the stage and return its final record (``stop`` is honoured where it exists)."""
    options = RunOptions(runs_dir=task.runs_dir, tracking_uri=task.tracking_uri, cwd=task.cwd,
                         stop=stop, tags=dict(task.tags), progress=task.progress,
                         pipeline=task.pipeline, sweep=task.sweep, executor=task.executor,
                         timeout=task.timeout, cell_timeout=task.cell_timeout,
                         threads=task.threads, mirror=task.mirror, origin=task.origin,
                         secret_names=task.secret_names)
    return run(task.template_path, task.parameters, options=options)
