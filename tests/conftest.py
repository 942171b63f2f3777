"""Shared fixtures: tiny notebooks, a shared run store, CLI helpers, kernel accounting."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

NOTEBOOKS = Path(__file__).parent / "notebooks"
ROOT = Path(__file__).resolve().parents[1]
NBOPS = [sys.executable, "-m", "nbops"]


@pytest.fixture(scope="session")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run store for the tests that only read their own run."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture
def nb() -> Any:
    return lambda name: NOTEBOOKS / f"{name}.ipynb"


@pytest.fixture
def run_api(shared_runs: Path, tmp_path: Path) -> Any:
    """Run a test notebook through the Python API, in-process."""
    from nbops.runner import RunOptions, run

    def _run(name: str, parameters: dict[str, Any] | None = None, **opts: Any) -> dict[str, Any]:
        options = RunOptions(runs_dir=opts.pop("runs_dir", shared_runs), cwd=tmp_path, **opts)
        return run(NOTEBOOKS / f"{name}.ipynb", parameters, options=options)

    return _run


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the real ``nbops`` CLI in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*NBOPS, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def kernel_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kernels_of(run_dir: Path) -> list[psutil.Process]:
    """Live kernel processes started for this run folder or runs folder: by their launch
    environment (a kernel started for the run), or by the kernel pid a record under it
    names (a warm pool kernel learns its run folder only after it started)."""
    recorded = set()
    for run_json in [run_dir / "run.json", *run_dir.glob("*/run.json")]:
        try:
            recorded.add(json.loads(run_json.read_text())["runner"].get("kernel_pid"))
        except (OSError, ValueError, KeyError):
            continue
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" in " ".join(proc.info["cmdline"] or []):
                if proc.pid in recorded or \
                        proc.environ().get("NBOPS_RUN_DIR", "").startswith(str(run_dir)):
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_http(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 120) -> None:
    """Poll ``url`` until it answers; fail early if ``proc`` exits."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited at start") from None
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{what} did not start within {timeout:.0f} s")


@contextmanager
def jupyter_server(module: str, home: Path, root_dir: Path) -> Iterator[dict[str, Any]]:
    """``python -m MODULE`` (jupyter_server or jupyterlab) on a free loopback port with a
    token, all its config and state under ``home``; stopped (killed if need be) on exit.

    Yields ``{"base": URL, "token": TOKEN, "env": ENVIRONMENT}``.
    """
    env = {**os.environ, "NBOPS_RUNS_DIR": str(home / "runs")}
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_WORKSPACES_DIR", "ws"),
                      ("XDG_CONFIG_HOME", "xdg-config"), ("XDG_CACHE_HOME", "xdg-cache")):
        env[name] = str(home / sub)
    port, token = free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [sys.executable, "-m", module, "--allow-root", "--no-browser",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/api/status?token={token}", server, module)
        yield {"base": base, "token": token, "env": env}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def wait_mirrored(run_dir: Path, timeout: float = 60) -> dict[str, Any]:
    """The record once a mirror has written it mirrored (the mirror child of a runner that
    was killed reconciles and mirrors its record after the runner died); fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
        if record["mlflow"] and record["mlflow"]["synced"]:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_dir.name} was not mirrored within {timeout} s: "
                                 f"{record['mlflow']}, warnings {record['warnings']}")
        time.sleep(0.2)
