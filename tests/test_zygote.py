"""The zygote (``execution/zygote.py``, ``execution/forking.py``): pool kernels forked from
one process that imported the modules once; isolation between forked kernels, figures,
modules learned from runs and remembered, a zygote spoiled by a module, exit codes."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest

from conftest import NOTEBOOKS
from nbops.execution import forking
from nbops.execution.forking import Zygote
from nbops.execution.pool import close_pools, start_kernel, template_key
from nbops.records.types import RunRecord
from nbops.runner import RunOptions, run
from nbops.util.envvars import kernel_base_env


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache folder of the test's own (modules remembered by pools), fresh pools."""
    close_pools()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield tmp_path / "cache"
    close_pools()


def run_forked(tmp_path: Path) -> RunRecord:
    record = run(NOTEBOOKS / "forked.ipynb", {},
                 options=RunOptions(runs_dir=tmp_path / "runs", tracking_uri="none",
                                    cwd=tmp_path, executor="pool"))
    assert record["status"] == "succeeded", record["error"]
    return record


@pytest.mark.slow
def test_pool_kernels_are_forked_isolated_and_learn_lazy_imports(
        tmp_path: Path, cache: Path) -> None:
    records = [run_forked(tmp_path) for _ in range(3)]
    outputs = [r["outputs"] for r in records]
    assert all(o["forked"] for o in outputs), outputs
    assert all(o["cwd"] == str(tmp_path) for o in outputs)
    assert len({o["pid"] for o in outputs}) == 3
    # numpy's global generator is reseeded in every kernel (a fork copies its state)
    assert len({o["draw"] for o in outputs}) == 3
    # the first run imported `wave` inside a function: the zygote learned it; the second
    # kernel was forked before that run ended, the third after
    assert outputs[0]["had_wave"] is False and outputs[2]["had_wave"] is True
    for record in records:  # the inline backend still shows figures
        nb = nbformat.read(tmp_path / "runs" / record["id"] / ".record" / "notebook.ipynb", 4)
        kinds = [k for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) for k in o.get("data", {})]
        assert "image/png" in kinds, kinds
    close_pools()
    remembered = json.loads((cache / "nbops" / "zygote-modules.json").read_text())
    key = template_key(nbformat.read(NOTEBOOKS / "forked.ipynb", 4))
    assert "wave" in remembered[sys.executable][key]  # per template, what its run imported


@pytest.mark.slow
def test_remembered_modules_are_in_the_first_forked_kernel(tmp_path: Path, cache: Path) -> None:
    memory = cache / "nbops" / "zygote-modules.json"
    memory.parent.mkdir(parents=True)
    key = template_key(nbformat.read(NOTEBOOKS / "forked.ipynb", 4))
    memory.write_text(json.dumps({sys.executable: {key: ["wave"], "other": ["json"]}}))
    first = run_forked(tmp_path)
    assert first["outputs"]["forked"] and first["outputs"]["had_wave"] is True


@pytest.mark.slow
def test_fork_off_starts_kernels_as_processes(tmp_path: Path, cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBOPS_FORK", "0")
    record = run_forked(tmp_path)
    assert record["outputs"]["forked"] is False


def spoiling_modules(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "hooked.py").write_text("import matplotlib_inline.backend_inline\n")
    (folder / "threaded.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    return {**kernel_base_env(None), "PYTHONPATH": str(folder)}


def test_a_module_hooking_into_the_shell_or_starting_a_thread_spoils_the_zygote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forking, "AVOID", set())
    env = spoiling_modules(tmp_path)
    for culprit in ("hooked", "threaded"):
        zygote = Zygote(env)
        try:
            assert zygote.usable
            reply = zygote.preload(["json", culprit, "wave"])
            assert reply["tainted_by"] == culprit
            assert not zygote.usable
        finally:
            zygote.close()
        assert culprit in forking.AVOID
    zygote = Zygote(env)  # a later zygote leaves them to the kernels
    try:
        assert zygote.preload(["hooked", "threaded", "wave"])["tainted_by"] is None
        assert zygote.usable
    finally:
        zygote.close()


def test_a_forked_kernel_reports_its_death_and_the_zygote_takes_its_kernels_along() -> None:
    env = kernel_base_env(None)
    zygote = Zygote(env)
    kernels = []
    try:
        zygote.preload(["json"])
        kernels = [start_kernel("python3", env, [], zygote) for _ in range(2)]
        pids = [k.pid for k in kernels]
        assert all(pid and psutil.Process(pid).ppid() == zygote.pid for pid in pids)
        process = kernels[0].km.provisioner.process  # type: ignore[union-attr]
        assert process.poll() is None
        os.kill(pids[0], signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert not kernels[0].alive()
    finally:
        zygote.close()  # the second kernel is still running: the zygote ends it
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pids[1]) and \
            psutil.Process(pids[1]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the zygote left its kernel running"
        time.sleep(0.1)
    for kernel in kernels:
        kernel.shutdown()


DRIVER = """
import json, sys, threading, time
from nbops.execution.forking import Zygote
from nbops.execution.pool import start_kernel
from nbops.util.envvars import kernel_base_env

env = {**kernel_base_env(None), "PYTHONPATH": sys.argv[1]}
zygote = Zygote(env)
kernel = start_kernel("python3", env, [], zygote)
threading.Thread(target=zygote.preload, args=(["slow"],), daemon=True).start()
time.sleep(1.0)  # the zygote is importing 'slow' (two minutes)
print(json.dumps({"zygote": zygote.pid, "kernel": kernel.pid}), flush=True)
time.sleep(600)
"""


def gone(pids: list[int], within: float) -> list[int]:
    """The pids still running (zombies count as gone) after waiting at most ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_a_zygote_busy_importing_dies_with_its_sigkilled_driver_and_takes_its_kernels(
        tmp_path: Path) -> None:
    """The socket's end is noticed only between requests; a zygote in a long import (or
    about to answer) still ends with its driver, through its death signal."""
    import subprocess

    (tmp_path / "slow.py").write_text("import time\ntime.sleep(120)\n")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        started = json.loads(driver.stdout.readline())
        assert psutil.Process(started["kernel"]).ppid() == started["zygote"]
    finally:
        driver.kill()
        driver.wait()
    left = gone([started["zygote"], started["kernel"]], within=30)
    for pid in left:  # (this test's own processes)
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the zygote or its kernel outlived the driver"


def test_a_zygote_outlives_the_driver_thread_that_started_it(tmp_path: Path) -> None:
    """The death signal also comes when only the starting thread ends: not a death."""
    import threading

    made: list[Zygote] = []
    starter = threading.Thread(target=lambda: made.append(Zygote(kernel_base_env(None))))
    starter.start()
    starter.join()
    zygote = made[0]
    try:
        time.sleep(1.0)
        assert zygote.process.poll() is None
        assert zygote.preload(["json"])["tainted_by"] is None
    finally:
        zygote.close()
