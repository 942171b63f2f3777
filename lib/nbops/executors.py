"""Executors run a parameterized notebook and report the true outcome.

The base class owns the bookkeeping: a worker thread, the whole-run deadline, stop
requests (SIGTERM / Ctrl-C in the runner), which cells really ran, the final status, and
marking the failing cell in the saved notebook. An engine implements one method,
:meth:`Executor._run`, which executes the cells and reports to a :class:`CellTracker`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .fsutil import atomic_write_text

FAILED_TAG = "nbops-failed-cell"
PAPERMILL_MARKER = "papermill-error-cell-tag"


@dataclass
class ExecutionRequest:
    """What to execute and under which limits."""

    notebook: nbformat.NotebookNode
    output_path: Path
    cwd: Path
    env: dict[str, str]
    cell_timeout: float | None = None
    run_timeout: float | None = None
    progress: bool = False
    kernel_name: str = "python3"
    kernel_log: Path | None = None


@dataclass
class ExecutionResult:
    """The truth about one execution."""

    status: str  # succeeded | failed | killed
    notebook: nbformat.NotebookNode
    error: dict[str, Any] | None = None
    kernel_pid: int | None = None


@dataclass
class CellTracker:
    """What really happened, cell by cell; filled in by the engine."""

    notebook: nbformat.NotebookNode
    save: Callable[[nbformat.NotebookNode], None]
    started: list[int] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)
    current: int | None = None
    current_since: float = 0.0
    kernel_pid: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def cell_started(self, index: int) -> None:
        if self.stop.is_set():
            raise RunStopped()
        self.started.append(index)
        self.current, self.current_since = index, time.monotonic()

    def cell_finished(self, index: int) -> None:
        self.finished.add(index)
        self.current = None


class RunStopped(Exception):
    """Raised inside the engine to stop before the next cell."""


class Executor(ABC):
    """Runs notebooks; subclasses implement :meth:`_run` only."""

    poll_interval = 0.1

    def execute(self, request: ExecutionRequest, stop: threading.Event | None = None
                ) -> ExecutionResult:
        """Execute ``request.notebook``, never raising for what happens inside it."""
        tracker = CellTracker(request.notebook, lambda nb: save_notebook(nb, request.output_path))
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
        result = derive_result(tracker, outcome["exc"], reason, request)
        mark_notebook(result)
        save_notebook(result.notebook, request.output_path)
        return result

    def _supervise(self, thread: threading.Thread, tracker: CellTracker,
                   request: ExecutionRequest, started: float, stop: threading.Event
                   ) -> dict[str, Any] | None:
        reason: dict[str, Any] | None = None
        while thread.is_alive():
            thread.join(self.poll_interval)
            if reason is None and stop.is_set():
                reason = {"kind": "killed"}
            elapsed = time.monotonic() - started
            if reason is None and request.run_timeout and elapsed > request.run_timeout:
                reason = {"kind": "run_timeout", "seconds": request.run_timeout}
            if reason is not None:
                tracker.stop.set()
                self.kill_kernel(tracker)
        return reason

    def kill_kernel(self, tracker: CellTracker) -> None:
        """Kill the kernel's whole process group (kernel and anything it spawned)."""
        if tracker.kernel_pid is None:
            return
        try:
            os.killpg(os.getpgid(tracker.kernel_pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(tracker.kernel_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    @abstractmethod
    def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
        """Execute every cell of ``request.notebook`` in a new kernel.

        Must call ``tracker.cell_started`` / ``tracker.cell_finished`` around each cell,
        set ``tracker.kernel_pid`` once the kernel runs, call ``tracker.save`` as it goes,
        and let exceptions (cell errors, dead kernel, timeouts) propagate.
        """


def save_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    atomic_write_text(path, nbformat.writes(nb))


def _code_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]


def _error_output(cell: nbformat.NotebookNode) -> dict[str, Any] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return {"ename": out.get("ename", ""), "evalue": out.get("evalue", "")}
    return None


def derive_result(tracker: CellTracker, exc: BaseException | None,
                  reason: dict[str, Any] | None, request: ExecutionRequest) -> ExecutionResult:
    """Decide the status from what actually executed, not from papermill's metadata."""
    nb = tracker.notebook
    nb.cells = [c for c in nb.cells if PAPERMILL_MARKER not in c.metadata.get("tags", [])]
    cell = tracker.current
    if cell is None and tracker.started and tracker.started[-1] not in tracker.finished:
        cell = tracker.started[-1]

    def fail(status: str, ename: str, evalue: str, message: str, index: int | None
             ) -> ExecutionResult:
        error = {"ename": ename, "evalue": evalue, "cell_index": index, "message": message}
        return ExecutionResult(status, nb, error, tracker.kernel_pid)

    if reason and reason["kind"] == "killed":
        where = f" in cell {cell}" if cell is not None else " before any cell ran"
        return fail("killed", "Killed", "stopped by signal", f"run killed{where}", cell)
    if reason and reason["kind"] == "run_timeout":
        secs = reason["seconds"]
        return fail("failed", "RunTimeout", f"{secs} s",
                    f"timed out in cell {cell} after {secs:g} s (whole-run timeout)", cell)
    ename = type(exc).__name__ if exc is not None else ""
    if ename == "CellTimeoutError":
        secs = request.cell_timeout or 0
        return fail("failed", "CellTimeout", f"{secs} s",
                    f"timed out in cell {cell} after {secs:g} s (per-cell timeout)", cell)
    if ename == "DeadKernelError":
        return fail("failed", "DeadKernelError", str(exc),
                    f"kernel died in cell {cell} (killed by a signal, out of memory, or "
                    "os._exit)", cell)
    for index in tracker.started:
        err = _error_output(nb.cells[index]) if index < len(nb.cells) else None
        if err is None:
            continue
        if err["ename"] == "SystemExit" and err["evalue"] in ("", "0", "None"):
            return fail("failed", "SystemExit", err["evalue"],
                        f"exited early at cell {index} (sys.exit with status "
                        f"{err['evalue'] or 0}); later cells did not run", index)
        return fail("failed", err["ename"], err["evalue"],
                    f"{err['ename']}: {err['evalue']} in cell {index}", index)
    if exc is not None and ename not in ("PapermillExecutionError",):
        return fail("failed", ename, str(exc), f"execution failed: {ename}: {exc}", cell)
    missing = [i for i in _code_cells(nb) if i not in tracker.finished]
    if missing:
        return fail("failed", "IncompleteRun", "",
                    f"exited early at cell {missing[0]}: cells {missing} did not run", missing[0])
    return ExecutionResult("succeeded", nb, None, tracker.kernel_pid)


def mark_notebook(result: ExecutionResult) -> None:
    """Fix per-cell statuses and put a banner before the failing cell."""
    nb = result.notebook
    ran = {i for i, c in enumerate(nb.cells) if c.get("execution_count") is not None}
    for index, cell in enumerate(nb.cells):
        pm = cell.metadata.setdefault("papermill", {})
        if cell.cell_type == "code" and index not in ran and pm.get("status") == "completed":
            pm["status"] = "pending"  # papermill marks unexecuted cells "completed"
    nb.metadata.setdefault("nbops", {})["status"] = result.status
    if result.error is None:
        return
    nb.metadata["nbops"]["error"] = result.error
    failed_at = result.error.get("cell_index")
    if isinstance(failed_at, int) and 0 <= failed_at < len(nb.cells):
        target = nb.cells[failed_at]
        target.metadata.setdefault("papermill", {})["status"] = "failed"
        target.metadata["papermill"]["exception"] = True
        target.metadata.setdefault("tags", [])
        if FAILED_TAG not in target.metadata["tags"]:
            target.metadata["tags"].append(FAILED_TAG)
        banner = nbformat.v4.new_markdown_cell(
            f'<span id="nbops-failed-cell" style="color:red; font-size:1.5em;">'
            f"nbops: {result.status}: {_escape(result.error['message'])}</span>")
        banner.metadata["tags"] = [FAILED_TAG + "-banner"]
        nb.cells.insert(failed_at + 1, banner)  # after it, so cell indices stay valid


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
