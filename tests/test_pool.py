"""Warm kernels (``--executor pool``, ``--reuse-kernel``): isolation between runs, what a
reused kernel carries over, no kernel left behind after success, a stop, SIGTERM or Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from conftest import NBOPS, NOTEBOOKS
from nbops.execution.forking import DRIVER_VAR
from nbops.execution.pool import close_pools, imports_of
from nbops.pipeline.run import PipelineOptions, run_pipeline
from nbops.records.types import RunRecord
from nbops.runner import RunOptions, run


def kernels_started_by(pid: int) -> list[psutil.Process]:
    """Live kernel processes ``pid`` started (JPY_PARENT_PID), its zygotes and the kernels
    they forked (their starting environment names the driver)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            env = proc.environ()
            launched = "ipykernel_launcher" in cmdline and env.get("JPY_PARENT_PID") == str(pid)
            if (launched or env.get(DRIVER_VAR) == str(pid)) and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until_gone(pid: int, timeout: float = 20) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := kernels_started_by(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def pools() -> Iterator[None]:
    yield
    close_pools()
    assert wait_until_gone(os.getpid(), 10) == []


def run_leak(tmp_path: Path, executor: str, leave: bool = False,
             stop: threading.Event | None = None) -> RunRecord:
    return run(NOTEBOOKS / "leak.ipynb", {"leave": leave},
               options=RunOptions(runs_dir=tmp_path / "runs", tracking_uri="none", cwd=tmp_path,
                                  executor=executor, stop=stop))


def test_imports_are_learned_from_top_level_statements_and_metadata() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["nbops"] = {"preload": ["torch"]}
    nb.cells = [
        nbformat.v4.new_code_cell("%matplotlib inline\nimport pandas as pd, numpy\n"
                                  "from sklearn.linear_model import LogisticRegression\n"
                                  "from . import local\nfrom __future__ import annotations"),
        nbformat.v4.new_code_cell("try:\n    import pyarrow\nexcept ImportError:\n    pass\n"
                                  "def f():\n    import secret_inside_function\n"),
        nbformat.v4.new_code_cell("this is not python"),
        nbformat.v4.new_markdown_cell("import markdown_is_not_code"),
        nbformat.v4.new_code_cell("import numpy  # again"),
    ]
    assert imports_of(nb) == ["torch", "pandas", "numpy", "sklearn.linear_model", "pyarrow"]


@pytest.mark.slow
def test_pool_gives_each_run_a_fresh_warm_kernel(tmp_path: Path, pools: None) -> None:
    first = run_leak(tmp_path, "pool", leave=True)
    second = run_leak(tmp_path, "pool")
    for record in (first, second):
        assert record["status"] == "succeeded", record["error"]
        assert record["outputs"]["preloaded"] is True  # imported ahead, not bound
        assert record["outputs"]["cwd"] == str(tmp_path)
        assert record["runner"]["kernel_pid"] == record["outputs"]["pid"]
    assert second["outputs"]["seen"] == {"global": False, "module": False, "env": None}
    assert first["outputs"]["pid"] != second["outputs"]["pid"]
    assert not psutil.pid_exists(first["outputs"]["pid"]) or \
        psutil.Process(first["outputs"]["pid"]).status() == psutil.STATUS_ZOMBIE
    plain = run_leak(tmp_path, "papermill")
    assert plain["status"] == "succeeded" and plain["outputs"]["preloaded"] is False
    nb = nbformat.read(tmp_path / "runs" / second["id"] / ".record" / "notebook.ipynb", 4)
    assert nb.metadata["nbops"]["executor"] == "pool"


@pytest.mark.slow
def test_reused_kernel_is_cleared_and_only_module_state_carries_over(
        tmp_path: Path, pools: None) -> None:
    first = run_leak(tmp_path, "reuse", leave=True)
    second = run_leak(tmp_path, "reuse")
    assert first["status"] == second["status"] == "succeeded", second["error"]
    assert first["outputs"]["pid"] == second["outputs"]["pid"]
    # the namespace and the environment are the run's own; module attributes carry over
    assert second["outputs"]["seen"] == {"global": False, "module": True, "env": None}
    assert second["outputs"]["cwd"] == str(tmp_path)
    nb = nbformat.read(tmp_path / "runs" / second["id"] / ".record" / "notebook.ipynb", 4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == [1, 2, 3, 4], counts  # parameters, injected parameters, two cells


@pytest.mark.slow
def test_a_stopped_reused_kernel_is_never_handed_out_again(tmp_path: Path, pools: None) -> None:
    stop = threading.Event()
    threading.Timer(4.0, stop.set).start()
    killed = run(NOTEBOOKS / "sleeps.ipynb", {"seconds": 60},
                 options=RunOptions(runs_dir=tmp_path / "runs", tracking_uri="none",
                                    executor="reuse", stop=stop))
    assert killed["status"] == "killed"
    after = run_leak(tmp_path, "reuse")
    assert after["status"] == "succeeded", after["error"]
    assert after["outputs"]["pid"] != killed["runner"]["kernel_pid"]


def two_stage_pipeline(tmp_path: Path, first: dict[str, object]) -> Path:
    spec = {"name": "warm", "stages": {
        "first": {"template": str(NOTEBOOKS / "sleeps.ipynb"), "parameters": first},
        "second": {"template": str(NOTEBOOKS / "leak.ipynb"), "after": ["first"]}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["pool", "reuse"])
def test_a_pipeline_leaves_no_kernel_behind(tmp_path: Path, executor: str) -> None:
    path = two_stage_pipeline(tmp_path, {"seconds": 0.1})
    record = run_pipeline(path, PipelineOptions(runs_dir=tmp_path / "runs", tracking_uri="none",
                                                executor=executor))
    assert record["status"] == "succeeded", record["error"]
    assert kernels_started_by(os.getpid()) == []  # at once: closed, not left to time out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_ends_the_pipeline_and_every_pool_kernel(
        tmp_path: Path, sig: signal.Signals) -> None:
    path = two_stage_pipeline(tmp_path, {"seconds": 600})
    proc = subprocess.Popen([*NBOPS, "pipeline", "run", str(path), "--runs-dir",
                             str(tmp_path / "runs"), "--tracking-uri", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the sleeping stage runs, the spare is warm
            records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/run.json")]
            if any(r["runner"].get("kernel_pid") for r in records) and \
                    len(kernels_started_by(proc.pid)) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the stage never started with a spare kernel beside it")
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert wait_until_gone(proc.pid, timeout=3) == []
    stage = json.loads(next((tmp_path / "runs").glob("*sleeps*/run.json")).read_text())
    assert stage["status"] == "killed"


@pytest.mark.slow
def test_sigkill_of_the_driver_ends_its_zygote_and_the_kernels_it_forked(
        tmp_path: Path) -> None:
    path = two_stage_pipeline(tmp_path, {"seconds": 600})
    proc = subprocess.Popen([*NBOPS, "pipeline", "run", str(path), "--runs-dir",
                             str(tmp_path / "runs"), "--tracking-uri", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the zygote and a kernel it forked run
            found = kernels_started_by(proc.pid)
            if any("nbops.execution.zygote" in " ".join(p.cmdline()) for p in found) and \
                    len(found) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no zygote with a forked kernel appeared")
        proc.kill()  # no handler runs: the zygote sees its socket close
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until_gone(proc.pid, timeout=10) == []
