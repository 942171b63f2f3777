"""Real-kernel execution: the status is the truth, the notebook is saved and marked."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat
import pytest

from conftest import kernel_alive

pytestmark = pytest.mark.slow


def saved(record: dict[str, Any], runs: Path) -> nbformat.NotebookNode:
    return nbformat.read(runs / record["id"] / "notebook.ipynb", as_version=4)


def marked_cell(nb: nbformat.NotebookNode) -> int:
    tagged = [i for i, c in enumerate(nb.cells)
              if "nbops-failed-cell" in c.metadata.get("tags", [])]
    return tagged[0]


def test_ok(run_api, shared_runs: Path, nb) -> None:  # type: ignore[no-untyped-def]
    before = nb("ok").read_bytes()
    record = run_api("ok", {"x": 21})
    assert nb("ok").read_bytes() == before  # the template is never written to
    assert record["status"] == "succeeded" and record["error"] is None
    assert record["outputs"] == {"y": 42} and record["metrics"] == {"y": 42.0}
    assert record["parameters"] == {"x": 21}
    nb = saved(record, shared_runs)
    assert "done 42" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert nb.metadata["nbops"]["status"] == "succeeded"
    assert not kernel_alive(record["runner"]["kernel_pid"])


def test_raises(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("raises", {"x": 7})
    assert record["status"] == "failed"
    err = record["error"]
    assert err["ename"] == "ValueError" and err["evalue"] == "bad value 7"
    nb = saved(record, shared_runs)
    assert err["cell_index"] == marked_cell(nb)
    assert "raise ValueError" in nb.cells[err["cell_index"]].source
    assert nb.cells[err["cell_index"]].metadata["papermill"]["status"] == "failed"
    assert nb.cells[-1].metadata["papermill"]["status"] == "pending"  # 'never' did not run
    assert not kernel_alive(record["runner"]["kernel_pid"])


def test_sys_exit_zero_is_not_success(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("sys_exit")
    assert record["status"] == "failed"
    assert record["error"]["message"].startswith("exited early at cell")
    nb = saved(record, shared_runs)
    assert "sys.exit(0)" in nb.cells[record["error"]["cell_index"]].source
    assert nb.cells[-1].get("execution_count") is None


def test_dead_kernel(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("os_exit")
    assert record["status"] == "failed"
    err = record["error"]
    assert err["message"].startswith("kernel died in cell")
    nb = saved(record, shared_runs)
    assert "os._exit" in nb.cells[err["cell_index"]].source
    assert nb.cells[-1].metadata["papermill"]["status"] == "pending"  # not papermill's "completed"


def test_cell_timeout(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("sleeps", cell_timeout=2)
    assert record["status"] == "failed"
    message = record["error"]["message"]
    assert "timed out in cell" in message and "after 2 s" in message
    assert "time.sleep" in saved(record, shared_runs).cells[record["error"]["cell_index"]].source
    assert record["metrics"] == {"before_sleep": 1.0}  # recorded before the timeout
    assert not kernel_alive(record["runner"]["kernel_pid"])


def test_run_timeout(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("sleeps", timeout=3)
    assert record["status"] == "failed"
    assert record["error"]["message"].startswith("timed out in cell")
    assert "whole-run" in record["error"]["message"]
    assert not kernel_alive(record["runner"]["kernel_pid"])


def test_huge_output(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("huge_output", {"lines": 100_000})
    assert record["status"] == "succeeded" and record["outputs"] == {"printed": 100_000}
    assert (shared_runs / record["id"] / "notebook.ipynb").stat().st_size > 4_000_000


def test_no_parameters_cell_runs_without_parameters(run_api) -> None:  # type: ignore[no-untyped-def]
    record = run_api("no_parameters")
    assert record["status"] == "succeeded" and record["outputs"] == {"answer": 42}


def test_values_arrive_exactly_with_their_type(run_api) -> None:  # type: ignore[no-untyped-def]
    tricky = "quote ' double \" back \\ newline \n NUL \x00 unicode ✓ 𝄞 x'); import os; ('"
    record = run_api("echo", {"i": 2**100, "f": float("-inf"), "b": True, "s": tricky, "n": 5,
                              "l": [1, "a", None, 1.5], "d": {"k": [True]}, "a": float("nan")})
    assert record["status"] == "succeeded"
    echo, types = record["outputs"]["echo"], record["outputs"]["types"]
    assert echo["i"] == 2**100 and echo["f"] == float("-inf") and echo["b"] is True
    assert echo["s"] == tricky and echo["n"] == 5 and echo["l"] == [1, "a", None, 1.5]
    assert echo["d"] == {"k": [True]} and math.isnan(echo["a"])
    assert types == {"i": "int", "f": "float", "b": "bool", "s": "str", "n": "int",
                     "l": "list", "d": "dict", "a": "float"}


def test_record_fields_and_artifacts(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    record = run_api("record", {"n_epochs": 4})
    assert record["status"] == "succeeded", record["error"]
    raw = json.loads((shared_runs / record["id"] / "run.json").read_text())
    for key in ("schema", "id", "stage", "template", "parameters", "status", "started_at",
                "ended_at", "duration_s", "metrics", "outputs", "artifacts", "environment",
                "error", "mlflow"):
        assert key in raw
    assert raw["schema"] == "nbops.run/1" and raw["stage"] == "record"
    assert [p["step"] for p in raw["metric_history"]["loss"]] == [0, 1, 2, 3]
    assert raw["metrics"]["loss"] == 0.25
    assert raw["logged_params"] == {"lr": 0.1, "layers": [3, 2]}
    paths = {a["path"] for a in raw["artifacts"]}
    assert {".record/notebook.ipynb", "artifacts/table.csv", "artifacts/figures/curve.png",
            "models/clf/MLmodel"} <= paths
    assert all(len(a["sha256"]) == 64 and a["bytes"] >= 0 for a in raw["artifacts"])
    env = raw["environment"]
    assert env["packages"]["papermill"] and env["python"] and "commit" in env["git"]
    assert raw["template"]["sha256"] and raw["mlflow"]["run_id"]


def test_load_run_and_model(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    import nbops

    record = run_api("record", {"n_epochs": 1})
    loaded = nbops.load_run(record["id"], runs_dir=shared_runs)
    assert loaded.parameters == {"n_epochs": 1} and loaded.outputs == {"n_epochs": 1}
    model = loaded.load_model("clf")
    assert list(model.predict([[0.0], [3.0]])) == [0, 1]
