"""Executors run a parameterized notebook and report the true outcome.

The base class owns the bookkeeping: a worker thread, the whole-run deadline, stop
requests (SIGTERM / Ctrl-C in the runner), which cells really ran, the final status
(derived by the pure functions of ``outcome``), and marking the failing cell in the saved
notebook. An engine implements one method, :meth:`Executor._run`, which executes the cells,
reports to a :class:`CellTracker`, and raises the engine-neutral exceptions of
``nbops.errors`` (``CellTimeout``, ``KernelDied``, ``CellFailed``) for abnormal ends.
Engine-specific notebook clean-up goes in the two optional hooks.
"""

from __future__ import annotations

import copy
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StopRequested
from ..util.files import atomic_write_text
from ..util.process import kill_process_tree
from ..util.secrets import Scrubber
from .outcome import ExecutionResult, StopReason, derive_result, mark_notebook, stamp_record


@dataclass
class ExecutionRequest:
    """What to execute and under which limits."""

    notebook: Any  # nbformat.NotebookNode
    output_path: Path
    cwd: Path
    env: dict[str, str]
    cell_timeout: float | None = None
    run_timeout: float | None = None
    progress: bool = False
    kernel_name: str = "python3"
    kernel_log: Path | None = None
    on_kernel_start: Callable[[int], None] | None = None  # told the kernel's pid at once
    scrubber: Scrubber | None = None  # the run's secrets: scrubbed from all that is written


@dataclass
class CellTracker:
    """What really happened, cell by cell; filled in by the engine."""

    notebook: Any  # nbformat.NotebookNode, replaced by the engine's working copy
    save: Callable[[Any], None]
    started: list[int] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)
    current: int | None = None
    current_since: float = 0.0
    kernel_pid: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    on_kernel_start: Callable[[int], None] | None = None

    def kernel_started(self, pid: int | None) -> None:
        """The engine's kernel is up: remember its pid and pass it on (the run record)."""
        self.kernel_pid = pid
        if pid is not None and self.on_kernel_start is not None:
            self.on_kernel_start(pid)

    def cell_started(self, index: int) -> None:
        if self.stop.is_set():
            raise StopRequested()
        self.started.append(index)
        self.current, self.current_since = index, time.monotonic()

    def cell_finished(self, index: int) -> None:
        self.finished.add(index)
        self.current = None


class Executor(ABC):
    """Runs notebooks; subclasses implement :meth:`_run` only."""

    poll_interval = 0.1

    def execute(self, request: ExecutionRequest, stop: threading.Event | None = None
                ) -> ExecutionResult:
        """Execute ``request.notebook``, never raising for what happens inside it."""
        tracker = CellTracker(request.notebook,
                              lambda nb: save_notebook(nb, request.output_path,
                                                       request.scrubber),
                              on_kernel_start=request.on_kernel_start)
        outcome: dict[str, BaseException | None] = {"exc": None}

        def work() -> None:
            try:
                self._run(request, tracker)
            except BaseException as exc:  # the status is derived from it below
                outcome["exc"] = exc

        thread = threading.Thread(target=work, name="nbops-executor", daemon=True)
        started = time.monotonic()
        thread.start()
        reason = self._supervise(thread, tracker, request, started, stop or threading.Event())
        self._clean_notebook(tracker.notebook)
        if request.scrubber:  # before the error is read from it into the record
            request.scrubber.notebook(tracker.notebook)
        result = derive_result(tracker.notebook, tracker.started, tracker.finished,
                               tracker.current, tracker.kernel_pid, outcome["exc"], reason,
                               request.cell_timeout)
        self._annotate_notebook(result)
        mark_notebook(result)
        stamp_record(result.notebook, request.output_path.parent.name, result.status)
        save_notebook(result.notebook, request.output_path)
        return result

    def _supervise(self, thread: threading.Thread, tracker: CellTracker,
                   request: ExecutionRequest, started: float, stop: threading.Event
                   ) -> StopReason | None:
        reason: StopReason | None = None
        while thread.is_alive():
            thread.join(self.poll_interval)
            if reason is None and stop.is_set():
                reason = {"kind": "killed", "seconds": None}
            elapsed = time.monotonic() - started
            if reason is None and request.run_timeout and elapsed > request.run_timeout:
                reason = {"kind": "run_timeout", "seconds": request.run_timeout}
            if reason is not None:
                tracker.stop.set()
                kill_process_tree(tracker.kernel_pid)
        return reason

    @abstractmethod
    def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
        """Execute every cell of ``request.notebook`` in a new kernel.

        Must call ``tracker.cell_started`` / ``tracker.cell_finished`` around each cell,
        call ``tracker.kernel_started(pid)`` once the kernel runs, call ``tracker.save`` as it goes,
        and raise ``CellTimeout`` / ``KernelDied`` / ``CellFailed`` (nbops.errors) for the
        corresponding ends; any other exception is reported as an execution failure.
        """

    def prepare(self, notebooks: Sequence[Any], *, parallel: int, threads: int | None,
                expected: int | None, secret_names: Sequence[str] = ()) -> None:
        """Hook: get ready for ``expected`` runs (None: unknown) of these notebooks,
        ``parallel`` at a time, each kernel with a budget of ``threads`` (a pool starts
        kernels now; never with a secret: ``secret_names``, what the driver's templates
        declare, and the others of ``contract.secrets.withheld_names`` are left out of
        their environment). Default: nothing to prepare."""
        return None

    def close(self) -> None:
        """Hook: release what :meth:`prepare` or runs kept (kernels). Default: nothing."""
        return None

    def check(self, request: ExecutionRequest) -> None:
        """Hook: refuse a request this engine cannot run (an unknown kernel, ...) before
        any record exists; raise a UsageError naming the problem. Default: accept."""
        return None

    def _clean_notebook(self, notebook: Any) -> None:
        """Hook: undo engine-specific changes before the outcome is derived (indices of
        cells must be those of the executed notebook). Default: nothing to undo."""
        return None

    def _annotate_notebook(self, result: ExecutionResult) -> None:
        """Hook: engine-specific per-cell metadata once the outcome is known (before the
        failure banner is inserted, so cell indices are those of the executed notebook).
        Default: none."""
        return None


def save_notebook(nb: Any, path: Path, scrubber: Scrubber | None = None) -> None:
    """Write ``nb`` atomically; with ``scrubber``, a scrubbed copy (the kernel's copy goes
    on unchanged: later cells may still add to the outputs)."""
    import nbformat

    if scrubber:
        nb = copy.deepcopy(nb)
        scrubber.notebook(nb)
    atomic_write_text(path, nbformat.writes(nb))
