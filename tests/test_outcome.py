"""Outcome derivation and executor bookkeeping with a fake engine: no kernel, milliseconds.

The real-kernel twins of these cases are in test_execution.py; here the engine is a small
``Executor`` subclass that plays a scenario on an in-memory notebook, so every rule of
``nbops.execution.outcome`` is exercised fast and without papermill.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbops.errors import CellFailed, CellTimeout, KernelDied, UnknownNameError
from nbops.execution.base import CellTracker, ExecutionRequest, Executor
from nbops.execution.outcome import FAILED_TAG, derive_result
from nbops.execution.registry import EXECUTORS, get_executor

Step = Callable[[int, Any, CellTracker], None]


def notebook(n: int = 3) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x = {i}") for i in range(n)]
    return nb


def error_output(ename: str, evalue: str) -> Any:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[])


class FakeExecutor(Executor):
    """Runs cells by calling ``step(index, cell, tracker)``; a cell 'finishes' when the
    step returns."""

    poll_interval = 0.01

    def __init__(self, step: Step | None = None) -> None:
        self.step = step

    def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
        for index, cell in enumerate(tracker.notebook.cells):
            tracker.cell_started(index)
            if self.step is not None:
                self.step(index, cell, tracker)
            if tracker.stop.is_set():  # the supervisor killed the "kernel" mid-cell
                raise KernelDied("killed by the supervisor")
            cell.execution_count = index + 1
            tracker.cell_finished(index)
            tracker.save(tracker.notebook)


def execute(tmp_path: Path, step: Step | None = None, stop: threading.Event | None = None,
            **limits: Any) -> Any:
    request = ExecutionRequest(notebook=notebook(), output_path=tmp_path / "out.ipynb",
                               cwd=tmp_path, env={}, **limits)
    return FakeExecutor(step).execute(request, stop)


def at(index: int, action: Callable[[Any, CellTracker], None]) -> Step:
    def step(i: int, cell: Any, tracker: CellTracker) -> None:
        if i == index:
            action(cell, tracker)
    return step


def test_success(tmp_path: Path) -> None:
    result = execute(tmp_path)
    assert result.status == "succeeded" and result.error is None
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert saved.metadata["nbops"]["status"] == "succeeded"


def test_cell_raises(tmp_path: Path) -> None:
    def boom(cell: Any, tracker: CellTracker) -> None:
        cell.outputs = [error_output("ValueError", "bad value 7")]
        raise CellFailed("cell 1 raised")

    result = execute(tmp_path, at(1, boom))
    assert result.status == "failed"
    assert result.error == {"ename": "ValueError", "evalue": "bad value 7", "cell_index": 1,
                            "message": "ValueError: bad value 7 in cell 1"}
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert FAILED_TAG in saved.cells[1].metadata["tags"]
    assert saved.cells[2].metadata["tags"] == [FAILED_TAG + "-banner"]  # banner after it
    assert saved.metadata["nbops"]["error"]["cell_index"] == 1


def test_sys_exit_zero_is_an_early_exit(tmp_path: Path) -> None:
    def leave(cell: Any, tracker: CellTracker) -> None:
        cell.outputs = [error_output("SystemExit", "0")]
        raise CellFailed("SystemExit")

    result = execute(tmp_path, at(1, leave))
    assert result.status == "failed" and result.error["ename"] == "SystemExit"
    assert result.error["message"].startswith("exited early at cell 1")


def test_engine_returning_early_leaves_cells_unrun(tmp_path: Path) -> None:
    class Quits(FakeExecutor):
        def _run(self, request: ExecutionRequest, tracker: CellTracker) -> None:
            tracker.cell_started(0)
            tracker.cell_finished(0)

    request = ExecutionRequest(notebook=notebook(), output_path=tmp_path / "o.ipynb",
                               cwd=tmp_path, env={})
    result = Quits().execute(request)
    assert result.status == "failed" and result.error["ename"] == "IncompleteRun"
    assert result.error["cell_index"] == 1 and "cells [1, 2] did not run" in \
        result.error["message"]


def test_dead_kernel(tmp_path: Path) -> None:
    def die(cell: Any, tracker: CellTracker) -> None:
        raise KernelDied("kernel gone")

    result = execute(tmp_path, at(2, die))
    assert result.status == "failed" and result.error["ename"] == "DeadKernelError"
    assert result.error["message"].startswith("kernel died in cell 2")


def test_cell_timeout(tmp_path: Path) -> None:
    def slow(cell: Any, tracker: CellTracker) -> None:
        raise CellTimeout("too slow")

    result = execute(tmp_path, at(0, slow), cell_timeout=2.0)
    assert result.error["message"] == "timed out in cell 0 after 2 s (per-cell timeout)"


def test_whole_run_timeout_stops_the_engine(tmp_path: Path) -> None:
    def hang(cell: Any, tracker: CellTracker) -> None:
        tracker.stop.wait(5)  # the supervisor sets it when the deadline passes

    started = time.monotonic()
    result = execute(tmp_path, at(1, hang), run_timeout=0.2)
    assert time.monotonic() - started < 3
    assert result.status == "failed" and result.error["ename"] == "RunTimeout"
    assert result.error["cell_index"] == 1 and "whole-run timeout" in result.error["message"]


def test_stop_request_is_killed(tmp_path: Path) -> None:
    stop = threading.Event()

    def hang(cell: Any, tracker: CellTracker) -> None:
        stop.set()
        tracker.stop.wait(5)

    result = execute(tmp_path, at(1, hang), stop=stop)
    assert result.status == "killed"
    assert result.error["message"] == "run killed in cell 1"


def test_other_engine_error_is_a_failure(tmp_path: Path) -> None:
    def crash(cell: Any, tracker: CellTracker) -> None:
        raise OSError("no such kernel")

    result = execute(tmp_path, at(0, crash))
    assert result.status == "failed"
    assert result.error["message"] == "execution failed: OSError: no such kernel"


def test_derive_is_pure_and_prefers_the_stop_reason() -> None:
    nb = notebook()
    result = derive_result(nb, [0, 1], {0}, 1, None, KernelDied("x"),
                           {"kind": "killed", "seconds": None}, None)
    assert result.status == "killed"  # a stop request wins over what it caused
    assert len(nb.cells) == 3  # derivation does not touch the notebook


def test_executor_registry_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_executor("papermil")
    assert "Did you mean 'papermill'?" in str(info.value)
    assert "Known executors: papermill" in str(info.value)
    assert info.value.exit_code == 2


def test_a_registered_executor_runs_through_the_runner(tmp_path: Path) -> None:
    from nbops.records.store import RunStore
    from nbops.runner import RunOptions, run

    EXECUTORS.register("fake-for-test", FakeExecutor)
    template = Path(__file__).parent / "notebooks" / "ok.ipynb"
    record = run(template, {"x": 2}, options=RunOptions(
        runs_dir=tmp_path / "runs", cwd=tmp_path, executor="fake-for-test",
        tracking_uri="none"))
    assert record["status"] == "succeeded"
    assert record["mlflow"] == {"tracking_uri": "none", "experiment_id": None,
                                "run_id": None, "synced": True}
    assert RunStore(tmp_path / "runs").read(record["id"])["status"] == "succeeded"


def test_a_recorded_notebook_says_it_is_evidence_without_moving_cells() -> None:
    import nbformat

    from nbops.execution.outcome import stamp_record

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Stage train"), nbformat.v4.new_code_cell("1")]
    stamp_record(nb, "20260101T000000-train-abcdef", "succeeded")
    assert len(nb.cells) == 2 and nb.cells[0].source.startswith("> **Recorded run `2026")
    assert "nbops runs verify 20260101T000000-train-abcdef" in nb.cells[0].source
    assert nb.metadata["nbops"]["record"] == "20260101T000000-train-abcdef"
    code_first = nbformat.v4.new_notebook()
    code_first.cells = [nbformat.v4.new_code_cell("1")]
    stamp_record(code_first, "r", "failed")
    assert [c.source for c in code_first.cells] == ["1"]
