"""MLflow beside the kernel: ``nbops run``'s mirror child opens the store while the kernel
runs and mirrors the final record before ``nbops run`` returns; drivers mirror in one
background thread and wait for it; every record is mirrored exactly once whoever gets
there first."""
from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import nbops
from conftest import NBOPS, NOTEBOOKS, cli, wait_mirrored
from nbops.records.background import MirrorQueue
from nbops.runner import RunOptions, run
from nbops.tracking.mlflow import MlflowTracker
from nbops.tracking.uri import default_uri


@pytest.mark.slow
def test_nbops_run_returns_with_its_run_mirrored_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "record.ipynb"), "--json", "--runs-dir", str(runs),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["mlflow"]["synced"] is True and printed["mlflow"]["run_id"]
    # readers that sync afterwards, together: nothing left to mirror, nothing mirrored twice
    with ThreadPoolExecutor(2) as pool:
        syncs = list(pool.map(lambda _: cli("runs", "sync", "--runs-dir", str(runs)), range(2)))
    assert [s.returncode for s in syncs] == [0, 0], [s.stdout + s.stderr for s in syncs]
    assert all("every finished run is mirrored" in s.stdout for s in syncs)
    tracker = MlflowTracker(default_uri(runs), runs)
    assert tracker.count_runs() == 1
    assert tracker.run_status(printed["mlflow"]["run_id"]) == "FINISHED"
    shown = json.loads(cli("runs", "show", printed["id"], "--json", "--runs-dir",
                           str(runs)).stdout)
    assert shown["mlflow"] == printed["mlflow"]
    waited = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--json", "--wait-mirror", "--runs-dir",
                 str(runs), cwd=tmp_path)  # the old flag is still accepted: the default now
    assert json.loads(waited.stdout)["mlflow"]["synced"] is True


@pytest.mark.slow
def test_a_driver_mirror_is_done_by_the_queue_or_by_a_reader_exactly_once(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    options = RunOptions(runs_dir=runs, cwd=tmp_path, mirror="driver")
    first = run(NOTEBOOKS / "ok.ipynb", {"x": 1}, options=options)
    second = run(NOTEBOOKS / "ok.ipynb", {"x": 2}, options=options)
    assert first["mlflow"] is not None and first["mlflow"]["run_id"] is None
    # a reader needing the tracked run (the register template does) mirrors it now
    run_id = nbops.tracked_run_id(runs / first["id"])
    assert run_id and nbops.tracked_run_id(first["id"], runs_dir=runs) == run_id
    queue = MirrorQueue()
    future = queue.submit(runs / second["id"])
    assert queue.submit(runs / second["id"]) is future  # submitted twice, mirrored once
    again = queue.submit(runs / first["id"]).result(timeout=120)
    assert again["mlflow"] is not None and again["mlflow"]["run_id"] == run_id
    mirrored = future.result(timeout=120)
    assert mirrored["mlflow"] is not None and mirrored["mlflow"]["synced"] is True
    assert MlflowTracker(default_uri(runs), runs).count_runs() == 2


def test_a_record_still_running_is_left_to_its_runner(tmp_path: Path) -> None:
    """The mirror child of a runner that is alive and not finished does nothing yet; the
    runner's death (its pipe closing) makes it reconcile the record."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([*NBOPS, "run", str(NOTEBOOKS / "sleeps.ipynb"), "-p", "seconds",
                             "600", "--runs-dir", str(runs), "--tracking-uri", "none"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline and not list(runs.glob("*/events.jsonl")):
            time.sleep(0.2)
        run_dir = next(runs.glob("*/run.json")).parent
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        time.sleep(1)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    record = wait_mirrored(run_dir)
    assert record["status"] == "killed"
