"""Done when it returns: when an nbops command (or ``nbops.run``) returns, nothing of it
writes into the runs folder any more; the record is final, the MLflow store exists, is
migrated and holds the run, and no process of the run is left behind."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from conftest import NBOPS, NOTEBOOKS, cli
from nbops.tracking.uri import default_uri

Snapshot = dict[str, tuple[int, int, str]]


def snapshot(folder: Path) -> Snapshot:
    """Every file under ``folder``: size, modification time (ns) and SHA-256."""
    found: Snapshot = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, digest)
    return found


def processes_at(folder: Path) -> list[str]:
    """Processes (other than this one) whose working folder is in ``folder`` or whose
    environment or command line names it: what could still write there."""
    needle = str(folder)
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            cwd = proc.cwd()
            environ = proc.environ()
        except (psutil.Error, OSError):
            continue
        named = any(needle in part for part in proc.info["cmdline"] or [])
        if cwd.startswith(needle) or named or any(needle in v for v in environ.values()):
            left.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:200]}")
    return left


def assert_settled(runs: Path, seconds: float = 3.0) -> Snapshot:
    """Nothing left running for ``runs``, and nothing in it changes for ``seconds``."""
    before = snapshot(runs)
    assert processes_at(runs) == []
    time.sleep(seconds)
    after = snapshot(runs)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert before == after, f"written after the command returned: {changed}"
    return after


def mlflow_client(runs: Path) -> object:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=default_uri(runs))


@pytest.mark.slow
def test_nbops_run_has_finished_writing_when_it_returns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "record.ipynb"), "--json", "--runs-dir", str(runs),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = assert_settled(runs)
    printed = json.loads(done.stdout)
    on_disk = json.loads((runs / printed["id"] / "run.json").read_text())
    assert printed == on_disk  # what it printed is the final record
    assert on_disk["mlflow"]["synced"] is True and on_disk["mlflow"]["run_id"]
    assert "mlflow.db" in files
    mlrun = mlflow_client(runs).get_run(on_disk["mlflow"]["run_id"])  # type: ignore[attr-defined]
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.metrics["score"] == 0.5 and mlrun.data.metrics["loss"] == pytest.approx(1 / 3)
    assert mlrun.data.tags["nbops.run_id"] == printed["id"]


@pytest.mark.slow
def test_the_python_api_has_finished_writing_when_it_returns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = ("import json, sys, nbops\n"
              "from nbops.runner import RunOptions\n"
              f"r = nbops.run({str(NOTEBOOKS / 'ok.ipynb')!r}, {{'x': 4}}, "
              f"options=RunOptions(runs_dir=sys.argv[1]))\n"
              "print(json.dumps(r['mlflow']))\n")
    done = subprocess.run([NBOPS[0], "-c", script, str(runs)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert_settled(runs)
    info = json.loads(done.stdout)
    assert info["synced"] is True
    mlrun = mlflow_client(runs).get_run(info["run_id"])  # type: ignore[attr-defined]
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["y"] == 8


@pytest.mark.slow
def test_nbops_pipeline_run_has_finished_writing_when_it_returns(tmp_path: Path) -> None:
    import yaml

    produce, consume = str(NOTEBOOKS / "produce.ipynb"), str(NOTEBOOKS / "consume.ipynb")
    ref = {"path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"name": "demo", "stages": {
        "produce": {"template": produce, "parameters": {"n": 4}},
        "left": {"template": consume, "parameters": {**ref, "factor": 2}}}}))
    runs = tmp_path / "runs"
    done = cli("pipeline", "run", str(tmp_path / "pipeline.yaml"), "--json", "--runs-dir",
               str(runs), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_settled(runs)
    stages = json.loads(done.stdout)["stages"]
    records = [json.loads((runs / s["run_id"] / "run.json").read_text())
               for s in stages.values()]
    assert all(r["mlflow"]["synced"] for r in records)
    client = mlflow_client(runs)
    for r in records:
        assert client.get_run(r["mlflow"]["run_id"]).info.status == "FINISHED"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_nbops_sweep_has_finished_writing_when_it_returns(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("sweep", "run", str(NOTEBOOKS / "fake_sweep.ipynb"), "--grid", "x=1,2",
               "--maximize", "score", "--runs-dir", str(runs), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_settled(runs)
    records = [json.loads(p.read_text()) for p in runs.glob("*/run.json")]
    assert len(records) == 2 and all(r["mlflow"]["synced"] for r in records)
    client = mlflow_client(runs)
    for r in records:
        assert client.get_run(r["mlflow"]["run_id"]).info.status == "FINISHED"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_concurrent_first_runs_leave_a_complete_store_and_nothing_behind(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"  # brand new: the racing runs create the store
    count = 6

    def one(i: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NBOPS, "run", str(NOTEBOOKS / "ok.ipynb"), "-p", "x", str(i),
                               "--json", "--runs-dir", str(runs)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    assert [r.returncode for r in results] == [0] * count, [r.stderr[-1500:] for r in results]
    client = mlflow_client(runs)  # opened at once, without nbops' lock
    experiment = client.get_experiment_by_name("nbops")  # type: ignore[attr-defined]
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id])  # type: ignore[attr-defined]
    assert sorted(r.data.metrics["y"] for r in found) == [2.0 * i for i in range(count)]
    assert {r.info.status for r in found} == {"FINISHED"}
    assert {r.data.tags["nbops.run_id"] for r in found} == {
        json.loads(r.stdout)["id"] for r in results}
    del client
    assert processes_at(runs) == []
    done = subprocess.run(["rm", "-rf", str(runs)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    time.sleep(2)
    assert not runs.exists()  # nothing re-created it


@pytest.mark.slow
def test_a_mirror_that_overruns_is_stopped_and_runs_sync_repairs_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--json", "--runs-dir", str(runs),
                cwd=tmp_path)  # the store exists: the late mirror is stopped mid-mirror
    assert first.returncode == 0, first.stderr
    late = cli("run", str(NOTEBOOKS / "ok.ipynb"), "-p", "x", "3", "--json", "--runs-dir",
               str(runs), cwd=tmp_path, env={"NBOPS_MIRROR_TIMEOUT": "0.001"})
    assert late.returncode == 0, late.stderr  # the run succeeded; only its mirror is late
    record = json.loads(late.stdout)
    hint = f"'nbops runs sync {record['id']}' mirrors it"
    assert "did not finish within 0.001 s" in late.stderr and hint in late.stderr
    assert record["status"] == "succeeded" and record["mlflow"]["synced"] is False
    assert any(hint in w for w in record["warnings"])
    assert_settled(runs, 1.0)  # the stopped mirror is gone, not writing on
    fixed = cli("runs", "sync", record["id"], "--runs-dir", str(runs))
    assert fixed.returncode == 0 and f"{record['id']}  synced" in fixed.stdout, fixed.stdout
    client = mlflow_client(runs)
    experiment = client.get_experiment_by_name("nbops")  # type: ignore[attr-defined]
    found = client.search_runs([experiment.experiment_id])  # type: ignore[attr-defined]
    assert sorted(r.data.metrics["y"] for r in found) == [2.0, 6.0]  # none made twice
    assert {r.info.status for r in found} == {"FINISHED"}


@pytest.mark.slow
def test_a_mirror_stopped_after_creating_its_tracked_run_is_finished_not_repeated(
        tmp_path: Path) -> None:
    from nbops.records.mirror import sync
    from nbops.runner import RunOptions, run
    from nbops.tracking.mlflow import MlflowTracker

    runs = tmp_path / "runs"
    record = run(NOTEBOOKS / "ok.ipynb", {"x": 5},
                 options=RunOptions(runs_dir=runs, cwd=tmp_path, mirror="driver"))
    tracker = MlflowTracker(default_uri(runs), runs)
    left = tracker.start(record)  # a mirror killed here: the record never got the id
    assert json.loads((runs / record["id"] / "run.json").read_text())["mlflow"]["run_id"] is None
    mirrored = sync(runs / record["id"])
    assert mirrored["mlflow"] is not None and mirrored["mlflow"]["run_id"] == left["run_id"]
    assert tracker.count_runs() == 1 and tracker.run_status(left["run_id"]) == "FINISHED"


def test_a_bad_mirror_timeout_is_refused_before_anything_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--runs-dir", str(runs), cwd=tmp_path,
               env={"NBOPS_MIRROR_TIMEOUT": "soon"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "NBOPS_MIRROR_TIMEOUT='soon' is not a positive number" in done.stderr
    assert not runs.exists()


def test_bad_input_leaves_nothing_behind(tmp_path: Path) -> None:
    """The mirror child starts before the inputs are checked; a bad input stops it."""
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "ok.ipynb"), "-p", "nope", "1", "--runs-dir", str(runs),
               cwd=tmp_path)
    assert done.returncode == 2 and "unknown parameter 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not runs.exists() and processes_at(runs) == []


def test_a_run_waits_600_s_for_its_mirror_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.records.background import mirror_timeout

    monkeypatch.delenv("NBOPS_MIRROR_TIMEOUT", raising=False)
    assert mirror_timeout() == 600
    monkeypatch.setenv("NBOPS_MIRROR_TIMEOUT", "2.5")
    assert mirror_timeout() == 2.5


def test_helpers_see_a_process_pointing_at_a_folder(tmp_path: Path) -> None:
    """The checks above would notice a leftover process, and a write."""
    folder = tmp_path / "runs"
    folder.mkdir()
    proc = subprocess.Popen(["sleep", "30"], cwd=folder)
    try:
        deadline = time.monotonic() + 10
        while not processes_at(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p.split(":")[0] for p in processes_at(folder)] == [str(proc.pid)]
    finally:
        proc.kill()
        proc.wait()
    (folder / "a").write_text("1")
    before = snapshot(folder)
    time.sleep(0.01)
    (folder / "a").write_text("2")
    assert snapshot(folder) != before
    shutil.rmtree(folder)
