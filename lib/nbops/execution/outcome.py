"""How a run ended, derived from what actually executed (pure functions, no engine).

Inputs are the executed notebook, the cells that started and finished, the exception the
engine raised (one of the engine-neutral ``nbops.errors`` interrupts, or any other) and a
stop reason from the supervisor. The rules, in order: a stop request is ``killed``; a
whole-run timeout, a per-cell timeout and a dead kernel are ``failed`` with their cell; the
first error output among started cells is ``failed`` (``SystemExit`` 0 reads "exited
early"); any other exception is ``failed``; a code cell that never finished is ``failed``
("exited early"); otherwise ``succeeded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ..errors import CellFailed, CellTimeout, KernelDied

if TYPE_CHECKING:
    from ..records.types import RunError, Status

FAILED_TAG = "nbops-failed-cell"


class StopReason(TypedDict):
    """Why the supervisor stopped the engine."""

    kind: Literal["killed", "run_timeout"]
    seconds: float | None


@dataclass
class ExecutionResult:
    """The truth about one execution."""

    status: Status
    notebook: Any  # nbformat.NotebookNode
    error: RunError | None = None
    kernel_pid: int | None = None


def _code_cells(nb: Any) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]


def _error_output(cell: Any) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return str(out.get("ename", "")), str(out.get("evalue", ""))
    return None


def derive_result(nb: Any, started: list[int], finished: set[int], current: int | None,
                  kernel_pid: int | None, exc: BaseException | None,
                  reason: StopReason | None, cell_timeout: float | None) -> ExecutionResult:
    """Decide the status from what actually executed."""
    cell = current
    if cell is None and started and started[-1] not in finished:
        cell = started[-1]

    def fail(status: Status, ename: str, evalue: str, message: str, index: int | None
             ) -> ExecutionResult:
        error: RunError = {"ename": ename, "evalue": evalue, "cell_index": index,
                           "message": message}
        return ExecutionResult(status, nb, error, kernel_pid)

    if reason is not None and reason["kind"] == "killed":
        where = f" in cell {cell}" if cell is not None else " before any cell ran"
        return fail("killed", "Killed", "stopped by signal", f"run killed{where}", cell)
    if reason is not None:
        secs = reason["seconds"] or 0.0
        return fail("failed", "RunTimeout", f"{secs} s",
                    f"timed out in cell {cell} after {secs:g} s (whole-run timeout)", cell)
    if isinstance(exc, CellTimeout):
        secs = cell_timeout or 0
        return fail("failed", "CellTimeout", f"{secs} s",
                    f"timed out in cell {cell} after {secs:g} s (per-cell timeout)", cell)
    if isinstance(exc, KernelDied):
        return fail("failed", "DeadKernelError", str(exc),
                    f"kernel died in cell {cell} (killed by a signal, out of memory, or "
                    "os._exit)", cell)
    for index in started:
        err = _error_output(nb.cells[index]) if index < len(nb.cells) else None
        if err is None:
            continue
        ename, evalue = err
        if ename == "SystemExit" and evalue in ("", "0", "None"):
            return fail("failed", "SystemExit", evalue,
                        f"exited early at cell {index} (sys.exit with status "
                        f"{evalue or 0}); later cells did not run", index)
        return fail("failed", ename, evalue, f"{ename}: {evalue} in cell {index}", index)
    if exc is not None and not isinstance(exc, CellFailed):
        ename = type(exc).__name__
        return fail("failed", ename, str(exc), f"execution failed: {ename}: {exc}", cell)
    missing = [i for i in _code_cells(nb) if i not in finished]
    if missing:
        return fail("failed", "IncompleteRun", "",
                    f"exited early at cell {missing[0]}: cells {missing} did not run", missing[0])
    return ExecutionResult("succeeded", nb, None, kernel_pid)


def mark_notebook(result: ExecutionResult) -> None:
    """Record the status in the notebook's metadata and put a banner after the failing
    cell (after it, so the cell indices in messages stay valid)."""
    import nbformat

    nb = result.notebook
    nb.metadata.setdefault("nbops", {})["status"] = result.status
    if result.error is None:
        return
    nb.metadata["nbops"]["error"] = dict(result.error)
    failed_at = result.error["cell_index"]
    if isinstance(failed_at, int) and 0 <= failed_at < len(nb.cells):
        tags = nb.cells[failed_at].metadata.setdefault("tags", [])
        if FAILED_TAG not in tags:
            tags.append(FAILED_TAG)
        banner = nbformat.v4.new_markdown_cell(
            f'<span id="nbops-failed-cell" style="color:red; font-size:1.5em;">'
            f"nbops: {result.status}: {_escape(result.error['message'])}</span>")
        banner.metadata["tags"] = [FAILED_TAG + "-banner"]
        nb.cells.insert(failed_at + 1, banner)


RECORD_NOTE_TAG = "nbops-record-note"


def stamp_record(nb: Any, run_id: str, status: str) -> None:
    """Say in the notebook that it is a run's evidence: in its metadata, and as a line at
    the top of its first cell when that is markdown (cells are never added or moved, so
    cell indices in messages stay valid)."""
    note = (f"> **Recorded run `{run_id}` ({status}).** The record keeps this notebook as "
            f"`.record/notebook.ipynb` (`nbops runs verify {run_id}` checks it); this is a "
            "working copy: opening, running or saving it changes nothing recorded, and a run "
            "of its cells is recorded as a new run.\n\n")
    nb.metadata.setdefault("nbops", {})["record"] = run_id
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown":
        first.source = note + first.source
        first.metadata.setdefault("tags", []).append(RECORD_NOTE_TAG)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
