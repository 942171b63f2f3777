"""A loop tick SIGKILLed mid-retrain (real processes): nothing of it outlives it, its cycle,
pipeline and stage runs are closed ``killed`` by the next reader and say why, the lease is
free, and the next tick decides afresh (it retries: the trigger still holds, and a killed
retrain counts toward the daily limit only). Also records left by a dead driver without a
process behind them: reconciled on read, old records without a driver left alone."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import NBOPS, NOTEBOOKS, cli
from nbops.records.schema import CYCLE_SCHEMA, PIPELINE_SCHEMA
from nbops.serving.predlog import PredictionLog, log_folder
from nbops.util.files import atomic_write_json
from nbops.util.process import process_start_time


def write_project(project: Path, nap: float, **loop: Any) -> None:
    """A loop whose retrain is one stage sleeping ``nap`` seconds, retraining on schedule
    (never retrained: the trigger holds on every tick)."""
    (project / "retrain.yaml").write_text(yaml.safe_dump({"name": "retrain", "stages": {
        "nap": {"template": str(NOTEBOOKS / "sleeps.ipynb"), "parameters": {"seconds": nap}}}}))
    (project / "nbops.yaml").write_text(yaml.safe_dump({"name": "p", "loop": {
        "model": "m", "retrain": "retrain.yaml",
        "monitor": {"template": str(NOTEBOOKS / "loop_monitor.ipynb")},
        "triggers": {"schedule": "1d"}, **loop}}))


def marked(mark: str) -> list[tuple[int, str]]:
    """Live processes started with this test's mark in their environment (every process
    the tick started inherits it: zygotes, kernels, mirror children)."""
    needle = f"NBOPS_TEST_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0") and state not in ("Z", "X"):
            found.append((int(entry), cmdline.decode(errors="replace")[:120]))
    return found


def stage_running(runs: Path) -> bool:
    """The retrain's pipeline record exists, and a run of one of its stages runs in a
    kernel."""
    for pipeline in (runs / "pipelines").glob("*.json"):
        record = json.loads(pipeline.read_text())
        for run_json in runs.glob("*/run.json"):
            run = json.loads(run_json.read_text())
            if (run["pipeline"] or {}).get("run_id") == record["id"] and \
                    run["status"] == "running" and run["runner"].get("kernel_pid"):
                return True
    return False


@pytest.mark.slow
def test_a_tick_killed_mid_retrain_leaves_nothing_running_and_the_next_tick_retries(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_project(tmp_path, nap=600)
    mark = secrets.token_hex(8)
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "NBOPS_RUNS_DIR": str(runs)}
    with (tmp_path / "tick.log").open("wb") as log:
        tick = subprocess.Popen([*NBOPS, "loop", "tick"], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**env, "NBOPS_TEST_MARK": mark})
    try:
        deadline = time.monotonic() + 240
        while not stage_running(runs):
            assert tick.poll() is None, (tmp_path / "tick.log").read_text()
            assert time.monotonic() < deadline, "the retrain's stage never started"
            time.sleep(0.3)
        time.sleep(1.0)  # the stage's notebook is running
        listed = cli("pipeline", "ls", "--json", cwd=tmp_path, env=env)
        assert json.loads(listed.stdout)[-1]["stages"]["nap"]["status"] == "running"
    finally:
        tick.kill()  # SIGKILL: no clean-up of its own
        tick.wait()
    # nothing the tick started outlives it (zygote, kernels, their children)
    deadline = time.monotonic() + 30
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid, _ in left:  # (this test's own processes)
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"left running after the tick was killed: {left}"

    # the next reader closes the cycle, its pipeline and the running stage's run
    history = cli("loop", "history", "--json", cwd=tmp_path, env=env)
    assert history.returncode == 0, history.stderr
    cycle = json.loads(history.stdout)[-1]
    assert cycle["status"] == "killed" and cycle["ended_at"] is not None
    assert f"its tick (process {tick.pid} on" in cycle["error"]
    assert "the next tick decides afresh" in cycle["error"]
    assert cycle["pipeline_run"] and cycle["pipeline_run"] in cycle["error"]
    shown = cli("loop", "history", cwd=tmp_path, env=env).stdout
    assert f"{cycle['id']}  killed" in shown and "ended without finishing it" in shown
    listed = cli("pipeline", "ls", cwd=tmp_path, env=env)
    assert f"{cycle['pipeline_run']}  killed" in listed.stdout, listed.stdout + listed.stderr
    pipeline = json.loads(cli("pipeline", "ls", "--json", cwd=tmp_path, env=env).stdout)[-1]
    assert pipeline["status"] == "killed"
    assert "pipeline killed: its driver (process" in pipeline["error"]
    assert "again: succeeded stages are reused" in pipeline["error"]
    nap = pipeline["stages"]["nap"]
    assert nap["status"] == "killed" and nap["run_id"] and "killed" in nap["error"]
    run = json.loads((runs / nap["run_id"] / "run.json").read_text())
    assert run["status"] == "killed" and run["error"]["ename"] == "RunnerDied"

    # the lease died with the tick; the next tick decides afresh and retries the retrain
    write_project(tmp_path, nap=0)
    again = cli("loop", "tick", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "another tick is running" not in again.stdout
    cycles = json.loads(cli("loop", "history", "--json", cwd=tmp_path, env=env).stdout)
    assert [c["status"] for c in cycles] == ["killed", "succeeded"]
    retried = cycles[-1]
    assert retried["decision"]["action"] == "retrain" and retried["decision"]["blocked"] is None
    assert "never retrained" in retried["decision"]["reason"]  # the killed one made nothing
    assert retried["outcome"]["status"] == "succeeded"
    assert retried["pipeline_run"] != cycle["pipeline_run"]


def dead_driver() -> dict[str, Any]:
    """The identity of a process that has ended (a tick or pipeline that was killed)."""
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    driver = {"pid": gone.pid, "host": socket.gethostname(),
              "proc_start": process_start_time(gone.pid)}
    gone.kill()
    gone.wait()
    return driver


def cycle_record(cycle_id: str, started: datetime, **fields: Any) -> dict[str, Any]:
    return {"schema": CYCLE_SCHEMA, "id": cycle_id, "model": "m", "status": "running",
            "started_at": started.isoformat(), "started_at_epoch": started.timestamp(),
            "ended_at": None, "duration_s": None,
            "origin": {"user": "u", "host": "h", "trigger": "cli", "cycle": None},
            "window": {"start": None, "end": started.isoformat(), "rows": 30},
            "monitor_run": None, "drift": {"action": "retrain", "share": 0.9},
            "decision": {"action": "retrain", "cause": "drift", "reason": "drift",
                         "blocked": None},
            "pipeline_run": None, "outcome": None,
            "reference": {"path": None, "rotated_to": None}, "error": None, **fields}


@pytest.mark.slow
def test_a_killed_cycle_is_closed_and_its_window_judged_again(tmp_path: Path) -> None:
    """Records a dead tick left: the cycle and its pipeline are closed ``killed`` (an old
    record naming no driver is left as it is); the next tick judges the killed cycle's
    rows again and decides again (here: retrain, cause drift, not held by a cooldown)."""
    runs = tmp_path / "runs"
    write_project(tmp_path, nap=0, triggers={"min_new_rows": 20},
                  limits={"cooldown": "1h", "dry_run": True})
    log = PredictionLog(log_folder(runs, "m"))
    earlier = datetime.now(timezone.utc) - timedelta(minutes=5)
    log.append([{"request_id": f"r-{i}", "row": 0, "time": earlier.isoformat(), "model": "m",
                 "version": 1, "variant": "champion", "latency_ms": 1.0,
                 "inputs": {"x": 1.0}, "prediction": 0} for i in range(30)])
    log.close()
    started = earlier + timedelta(minutes=1)
    driver = dead_driver()
    pipeline_id = "20200101T000000-pipeline-retrain-aaaaaa"
    atomic_write_json(runs / "pipelines" / f"{pipeline_id}.json", {
        "schema": PIPELINE_SCHEMA, "id": pipeline_id, "name": "retrain",
        "file": str(tmp_path / "retrain.yaml"), "status": "running",
        "started_at": started.isoformat(), "ended_at": None, "duration_s": None,
        "order": ["nap"], "error": None, "mlflow": None, "driver": driver,
        "stages": {"nap": {"status": "running", "run_id": None, "cached": False}}})
    old = "20200101T000000-cycle-000000"  # written before cycles named their tick
    atomic_write_json(runs / "loop" / "cycles" / f"{old}.json",
                      cycle_record(old, started - timedelta(seconds=1), status="running",
                                   drift=None, decision=None))
    killed = "20200101T000001-cycle-aaaaaa"
    atomic_write_json(runs / "loop" / "cycles" / f"{killed}.json",
                      cycle_record(killed, started, driver=driver, pipeline_run=pipeline_id))
    env = {"MLFLOW_TRACKING_URI": "", "NBOPS_RUNS_DIR": str(runs)}

    done = cli("loop", "tick", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"cycle {killed} was left running by a tick that is gone: marked killed" in \
        done.stdout
    cycles = json.loads(cli("loop", "history", "--json", cwd=tmp_path, env=env).stdout)
    assert [c["status"] for c in cycles] == ["running", "killed", "succeeded"]
    assert f"process {driver['pid']} on" in cycles[1]["error"]
    latest = cycles[-1]
    assert latest["window"]["start"] is None and latest["window"]["rows"] == 30  # judged again
    assert latest["drift"]["action"] == "retrain"
    assert (latest["decision"]["action"], latest["decision"]["cause"]) == ("retrain", "drift")
    assert "dry run" in latest["decision"]["blocked"]  # not "cooldown"
    pipeline = json.loads(cli("pipeline", "ls", "--json", cwd=tmp_path, env=env).stdout)[0]
    assert pipeline["status"] == "killed"
    assert pipeline["stages"]["nap"]["status"] == "killed"


def test_reading_a_dead_drivers_pipeline_ends_what_its_zygote_left(tmp_path: Path) -> None:
    """The second line behind the zygote's own death signal: a process marked with the
    dead driver's pid (``NBOPS_ZYGOTE_OF``) that started after it is killed by the reader;
    one marked with a live driver's pid is not."""
    from nbops.records.pipelines import PipelineStore

    ZYGOTE_OF = "NBOPS_ZYGOTE_OF"  # noqa: N806 - nbops.util.envvars.ZYGOTE_OF
    runs = tmp_path / "runs"
    driver = dead_driver()
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    left = subprocess.Popen(sleeper, env={**os.environ, ZYGOTE_OF: str(driver["pid"])},
                            start_new_session=True)  # as a zygote
    other = subprocess.Popen(sleeper, env={**os.environ, ZYGOTE_OF: str(os.getpid())},
                             start_new_session=True)
    try:
        atomic_write_json(runs / "pipelines" / "p.json", {
            "schema": PIPELINE_SCHEMA, "id": "p", "name": "p", "file": "pipeline.yaml",
            "status": "running", "started_at": datetime.now(timezone.utc).isoformat(),
            "ended_at": None, "duration_s": None, "order": ["a"], "error": None,
            "mlflow": None, "driver": driver,
            "stages": {"a": {"status": "pending", "run_id": None, "cached": False}}})
        record = PipelineStore(runs).read("p")
        assert record["status"] == "killed" and record["stages"]["a"]["status"] == "pending"
        assert left.wait(timeout=30) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        left.kill()
        other.kill()
        left.wait()
        other.wait()
