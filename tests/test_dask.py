"""Stages on Dask workers (``--dask``): a real LocalCluster of 2 process workers, a driver
that alone writes to MLflow, lost workers, invisible folders, stop events, signals.

The shared cluster keeps Dask's default ``allowed-failures`` (a remote scheduler's case):
a task whose worker died is rescheduled by Dask, and only nbops's claim file keeps the
notebook from running twice.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import NBOPS, NOTEBOOKS, cli, free_port, kernel_alive, kernels_of
from nbops.errors import UsageError
from nbops.pipeline.address import parse_dask

SLEEPS = str(NOTEBOOKS / "sleeps.ipynb")


# -- parsing: fast, no cluster ---------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("local:2", {"kind": "local", "workers": 2, "address": "local:2"}),
    ("tcp://10.0.0.5:8786", {"kind": "remote", "workers": 0, "address": "tcp://10.0.0.5:8786"}),
    ("scheduler:8786", {"kind": "remote", "workers": 0, "address": "scheduler:8786"}),
])
def test_dask_targets_parse(text: str, want: dict[str, Any]) -> None:
    assert parse_dask(text) == want


@pytest.mark.parametrize("text", ["local:0", "local:", "local:two", "local", "scheduler",
                                  "tcp://host", "http://h:1/x"])
def test_bad_dask_targets_say_both_accepted_forms(text: str) -> None:
    with pytest.raises(UsageError, match=r"local:N .* tcp://host:8786"):
        parse_dask(text)


def test_retryable_must_be_a_boolean(tmp_path: Path) -> None:
    from nbops.errors import PipelineError
    from nbops.pipeline.spec import load

    path = _pipeline(tmp_path, {"a": {"template": SLEEPS, "retryable": "yes"},
                                "b": {"template": SLEEPS, "retryable": True}})
    with pytest.raises(PipelineError, match="'retryable' must be true or false, got 'yes'"):
        load(path)
    _pipeline(tmp_path, {"b": {"template": SLEEPS, "retryable": True}, "c": {"template": SLEEPS}})
    pipe = load(path)
    assert pipe.stages["b"].retryable and not pipe.stages["c"].retryable


@pytest.mark.parametrize("spec", ["local:0", "local:x", "nonsense"])
def test_a_bad_dask_option_exits_2_before_anything_runs(tmp_path: Path, spec: str) -> None:
    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 0}}})
    result = cli("pipeline", "run", "pipeline.yaml", "--dask", spec, "--runs-dir", "runs",
                 cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "local:N" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


# -- a real cluster --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """2 process workers, 1 thread each; yields a client of it (its address: .scheduler)."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local, \
            distributed.Client(local, set_as_default=False) as client:
        yield client


def _address(client: Any) -> str:
    return str(client.scheduler.address)


def _pipeline(folder: Path, stages: dict[str, Any]) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "d", "stages": stages}))
    return path


def _pipeline_driver(cluster: Any, folder: Path) -> subprocess.Popen[str]:
    """``nbops pipeline run`` of ``folder``'s pipeline.yaml on the cluster, JSON out."""
    return subprocess.Popen(
        [*NBOPS, "pipeline", "run", "pipeline.yaml", "--dask", _address(cluster), "--json",
         "--runs-dir", "runs", "--tracking-uri", "none"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs(runs: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*/run.json"))]


def _sleeping(runs: Path, timeout: float = 120, stage: str | None = None) -> dict[str, Any]:
    """The first record (of the pipeline ``stage``, if given) whose notebook reached its
    sleep (kernel pid known)."""
    from nbops.records.store import read_events

    deadline = time.time() + timeout
    while time.time() < deadline:
        for record in _runs(runs):
            if stage and (record["pipeline"] or {}).get("stage") != stage:
                continue
            if record["runner"]["kernel_pid"] and any(
                    e.get("name") == "before_sleep" for e in read_events(runs / record["id"])):
                return record
        time.sleep(0.3)
    raise AssertionError(f"no notebook started sleeping within {timeout:.0f} s")


@pytest.mark.slow
def test_independent_stages_run_at_once_on_two_workers_and_the_driver_mirrors(
        cluster: Any, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    _pipeline(tmp_path, {name: {"template": SLEEPS, "parameters": {"seconds": 4}}
                         for name in ("a", "b")})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = cli("pipeline", "run", "pipeline.yaml", "--dask", _address(cluster), "--json",
                 "--runs-dir", "runs", "--tracking-uri", uri, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    pipeline = json.loads(result.stdout)
    a, b = (json.loads((tmp_path / "runs" / s["run_id"] / "run.json").read_text())
            for s in pipeline["stages"].values())
    ends = [r["started_at_epoch"] + r["duration_s"] for r in (a, b)]
    assert a["started_at_epoch"] < ends[1] and b["started_at_epoch"] < ends[0]  # overlap
    workers = set(cluster.run(os.getpid).values())
    assert {a["runner"]["pid"], b["runner"]["pid"]} == workers  # one stage per worker
    parent = pipeline["mlflow"]["run_id"]
    client = MlflowClient(uri)
    for record in (a, b):
        assert record["mlflow"]["synced"] and not record["warnings"]
        tracked = client.get_run(record["mlflow"]["run_id"])
        assert tracked.info.status == "FINISHED"
        assert tracked.data.tags["mlflow.parentRunId"] == parent
    assert not list((tmp_path / "runs" / ".dask-claims").iterdir())


@pytest.mark.slow
def test_a_worker_killed_mid_stage_fails_that_stage_as_worker_lost(
        cluster: Any, tmp_path: Path) -> None:
    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 600}}})
    driver = _pipeline_driver(cluster, tmp_path)
    try:
        record = _sleeping(tmp_path / "runs")
        os.kill(record["runner"]["pid"], signal.SIGKILL)  # the worker process
        killed_at = time.time()
        out, err = driver.communicate(timeout=90)
        took = time.time() - killed_at
    finally:
        driver.kill()
    assert driver.returncode == 1, err
    assert took < 30, f"the driver took {took:.0f} s to notice the lost worker"
    stage = json.loads(out)["stages"]["a"]
    assert stage["status"] == "failed" and "worker lost" in stage["error"]
    # Dask (allowed-failures 3 here) did reschedule it: the claim file stopped the re-run
    assert "WorkerLostError" in stage["error"] and "started before" in stage["error"]
    runs = _runs(tmp_path / "runs")
    assert len(runs) == 1, "the notebook ran again after its worker died"
    assert runs[0]["status"] == "failed" and runs[0]["error"]["ename"] == "WorkerLost"
    assert "worker lost" in runs[0]["error"]["message"]
    assert not kernel_alive(record["runner"]["kernel_pid"])
    assert kernels_of(tmp_path / "runs") == []
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


@pytest.mark.slow
def test_a_retryable_stage_runs_again_after_its_worker_died(
        cluster: Any, tmp_path: Path) -> None:
    cluster.wait_for_workers(2, timeout=60)
    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 6},
                               "retryable": True}})
    driver = _pipeline_driver(cluster, tmp_path)
    try:
        first = _sleeping(tmp_path / "runs")
        os.kill(first["runner"]["pid"], signal.SIGKILL)
        out, err = driver.communicate(timeout=120)
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    lost, retried = sorted(_runs(tmp_path / "runs"), key=lambda r: r["started_at_epoch"])
    assert lost["id"] == first["id"] and lost["status"] == "failed"
    assert "worker lost" in lost["error"]["message"]
    assert "retrying (attempt 2 of 3)" in lost["error"]["message"]
    assert retried["status"] == "succeeded"
    assert json.loads(out)["stages"]["a"]["run_id"] == retried["id"]
    assert not kernel_alive(first["runner"]["kernel_pid"])
    cluster.wait_for_workers(2, timeout=60)


@pytest.mark.slow
def test_jobs_caps_the_tasks_in_flight_and_cancel_drops_the_waiting_ones(
        cluster: Any, tmp_path: Path) -> None:
    from nbops.pipeline.scheduler import open_scheduler
    from nbops.pipeline.task import StageTask

    cluster.wait_for_workers(2, timeout=60)

    def task(name: str, seconds: float) -> StageTask:
        return StageTask(stage=name, template_path=Path(SLEEPS), parameters={"seconds": seconds},
                         cwd=tmp_path, runs_dir=tmp_path / "runs", tracking_uri="none",
                         pipeline={"run_id": "p-jobs", "stage": name, "cache_key": name})

    scheduler = open_scheduler(1, _address(cluster))  # 2 workers, but 1 task at a time
    try:
        assert scheduler.jobs == 1
        first, second = (scheduler.submit(task(n, 2), threading.Event()) for n in ("a", "b"))
        a, b = first.result(timeout=120), second.result(timeout=120)
        assert a["status"] == b["status"] == "succeeded"
        assert b["started_at_epoch"] >= a["started_at_epoch"] + a["duration_s"] - 0.5
        running = scheduler.submit(task("c", 600), threading.Event())
        waiting = scheduler.submit(task("d", 600), threading.Event())
        _sleeping(tmp_path / "runs", stage="c")
    finally:
        scheduler.shutdown(cancel=True)
    assert waiting.cancelled()
    assert running.result(timeout=1)["status"] == "killed"
    assert [r["stage"] for r in _runs(tmp_path / "runs")].count("sleeps") == 3  # d never ran
    assert len(cluster.scheduler_info()["workers"]) == 2  # a remote cluster stays up


@pytest.mark.slow
def test_a_stop_event_kills_that_run_only_and_a_local_cluster_closes(tmp_path: Path) -> None:
    from nbops.pipeline.dask import DaskScheduler
    from nbops.pipeline.scheduler import open_scheduler
    from nbops.pipeline.task import StageTask

    scheduler = open_scheduler(None, "local:1")
    assert isinstance(scheduler, DaskScheduler) and scheduler.jobs == 1
    assert scheduler.cluster is not None
    assert scheduler.cluster.scheduler.allowed_failures == 0
    worker_pids = list(scheduler.client.run(os.getpid).values())
    task = StageTask(stage="s", template_path=Path(SLEEPS), parameters={"seconds": 600},
                     cwd=tmp_path, runs_dir=tmp_path / "runs", tracking_uri="none",
                     pipeline={"run_id": "p-1", "stage": "s", "cache_key": "k"})
    stop = threading.Event()
    try:
        future = scheduler.submit(task, stop)
        record = _sleeping(tmp_path / "runs")
        stop.set()
        final = future.result(timeout=60)
    finally:
        scheduler.shutdown(cancel=True)
    assert final["id"] == record["id"] and final["status"] == "killed"
    assert not kernel_alive(record["runner"]["kernel_pid"])
    deadline = time.time() + 30
    while any(psutil.pid_exists(p) for p in worker_pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(kernel_alive(p) for p in worker_pids), "the local cluster was not closed"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-driver", "ctrl-c-group"])
def test_a_signal_on_the_driver_stops_stages_and_leaves_no_process(
        tmp_path: Path, how: str) -> None:
    """SIGTERM to the driver alone, or SIGINT to its whole process group (Ctrl-C in a
    terminal reaches the local workers too)."""
    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 600}}})
    driver = subprocess.Popen(
        [*NBOPS, "pipeline", "run", "pipeline.yaml", "--dask", "local:2", "--json",
         "--runs-dir", "runs", "--tracking-uri", "none"], start_new_session=True,
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        record = _sleeping(tmp_path / "runs")
        family = psutil.Process(driver.pid).children(recursive=True)
        if how == "sigterm-driver":
            driver.send_signal(signal.SIGTERM)
        else:
            os.killpg(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=90)
    finally:
        driver.kill()
    assert json.loads(out)["status"] == "killed", err
    final = _runs(tmp_path / "runs")[0]
    assert final["status"] == "killed", final["error"]
    assert not kernel_alive(record["runner"]["kernel_pid"])
    assert len(family) >= 2  # the worker processes (and their kernel)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not [p for p in alive if kernel_alive(p.pid)], alive


def test_without_distributed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.errors import MissingDependencyError
    from nbops.pipeline.scheduler import open_scheduler

    monkeypatch.setitem(sys.modules, "distributed", None)  # an import of it fails
    monkeypatch.delitem(sys.modules, "nbops.pipeline.dask", raising=False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'nbops\[dask\]'"):
        open_scheduler(None, "local:1")


@pytest.mark.slow
def test_a_runs_folder_the_workers_do_not_see_is_refused_up_front(tmp_path: Path) -> None:
    """A worker in its own mount namespace, with an empty tmpfs over this test's folder:
    the same paths, another filesystem."""
    import distributed

    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 0}}})
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as local, \
            distributed.Client(local, set_as_default=False) as client:
        address = str(local.scheduler.address)
        worker = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs tmpfs "{tmp_path}" && exec "{sys.executable}" -m '
             f'distributed.cli.dask_worker {address} --nthreads 1 --no-nanny '
             f'--no-dashboard'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=60)
            name = next(iter(client.scheduler_info()["workers"]))
            result = cli("pipeline", "run", "pipeline.yaml", "--dask", address,
                         "--runs-dir", "runs", cwd=tmp_path, timeout=120)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert result.returncode == 2, result.stderr
    assert "must share this machine's filesystem" in result.stderr
    assert f"worker {name}: {tmp_path / 'runs'}" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [], "something was submitted"


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_usage_error_within_the_connect_timeout(
        tmp_path: Path) -> None:
    _pipeline(tmp_path, {"a": {"template": SLEEPS, "parameters": {"seconds": 0}}})
    started = time.time()
    result = cli("pipeline", "run", "pipeline.yaml", "--dask", f"tcp://127.0.0.1:{free_port()}",
                 "--runs-dir", "runs", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.time() - started < 40
    assert not (tmp_path / "runs" / "pipelines").exists()


# -- sweeps on the cluster -------------------------------------------------------------------

FAKE_SWEEP = str(NOTEBOOKS / "fake_sweep.ipynb")


def _sweep_record(runs: Path) -> dict[str, Any]:
    return json.loads(next((runs / "sweeps").glob("*.json")).read_text())


@pytest.mark.slow
def test_a_sweep_runs_its_trials_on_both_workers(cluster: Any, tmp_path: Path) -> None:
    result = cli("sweep", "run", FAKE_SWEEP, "--grid", "x=1,2,3,4", "-p", "steps", "1",
                 "--maximize", "score", "--dask", _address(cluster), "--runs-dir", "runs",
                 cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    sweep = _sweep_record(tmp_path / "runs")
    assert [t["status"] for t in sweep["trials"]] == ["succeeded"] * 4
    assert sweep["best"] is not None and sweep["best"]["value"] == 0.0  # x = 2
    runs = _runs(tmp_path / "runs")
    assert len(runs) == 4 and len({r["runner"]["pid"] for r in runs}) == 2  # both workers
    assert all(r["mlflow"]["synced"] for r in runs)  # by the driver, the one writer


@pytest.mark.slow
def test_a_worker_killed_mid_trial_fails_that_trial_and_the_sweep_goes_on(
        cluster: Any, tmp_path: Path) -> None:
    from nbops.records.store import read_events

    runs = tmp_path / "runs"
    driver = subprocess.Popen(
        [*NBOPS, "sweep", "run", FAKE_SWEEP, "--grid", "x=1,3", "-p", "kind", "bad", "-p",
         "steps", "1", "-p", "delay", "20", "--maximize", "score", "--dask", _address(cluster),
         "--runs-dir", "runs", "--tracking-uri", "none"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        victim = None
        while victim is None and time.time() < deadline:
            victim = next((r for r in _runs(runs) if r["runner"]["kernel_pid"] and any(
                e.get("name") == "score" for e in read_events(runs / r["id"]))), None)
            time.sleep(0.3)
        assert victim is not None, "no trial reached its first step"
        os.kill(victim["runner"]["pid"], signal.SIGKILL)  # the worker running that trial
        out, err = driver.communicate(timeout=180)
    finally:
        driver.kill()
    assert driver.returncode == 0, err  # one trial succeeded: the sweep succeeded
    trials = {t["run_id"]: t for t in _sweep_record(runs)["trials"]}
    lost = trials[victim["id"]]
    assert lost["status"] == "failed" and "worker lost" in (lost["error"] or "")
    others = [t for t in trials.values() if t["run_id"] != victim["id"]]
    assert [t["status"] for t in others] == ["succeeded"]
    assert len(_runs(runs)) == 2, "the lost trial's notebook ran again"
    cluster.wait_for_workers(2, timeout=60)
