"""Every run is an MLflow run whose status, params, metrics, artifacts and models match."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import NBOPS, NOTEBOOKS, cli, free_port, wait_for_http

pytestmark = pytest.mark.slow


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_mlflow_run_mirrors_record(run_api) -> None:  # type: ignore[no-untyped-def]
    record = run_api("record", {"n_epochs": 3})
    info = record["mlflow"]
    mlrun = client(info["tracking_uri"]).get_run(info["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["n_epochs"] == "3" and mlrun.data.params["logged.lr"] == "0.1"
    assert mlrun.data.tags["nbops.run_id"] == record["id"]
    assert mlrun.data.tags["nbops.stage"] == "record"
    assert mlrun.data.tags["nbops.template_sha256"] == record["template"]["sha256"]
    # who and why: the record's origin, as MLflow's user and an nbops tag
    assert record["origin"]["trigger"] == "api" and record["origin"]["cycle"] is None
    assert mlrun.data.tags["mlflow.user"] == record["origin"]["user"]
    assert mlrun.data.tags["nbops.trigger"] == "api"
    history = client(info["tracking_uri"]).get_metric_history(info["run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    paths = {a.path for a in client(info["tracking_uri"]).list_artifacts(info["run_id"])}
    # the notebook's artifacts sit at the root of MLflow's artifacts (no artifacts/artifacts/)
    assert {"notebook.ipynb", "table.csv", "models"} <= paths and "artifacts" not in paths
    assert mlrun.data.tags["mlflow.runName"].startswith("record-")
    models = {a.path for a in
              client(info["tracking_uri"]).list_artifacts(info["run_id"], "models/clf")}
    assert "models/clf/MLmodel" in models
    logged = client(info["tracking_uri"]).search_logged_models(
        experiment_ids=[mlrun.info.experiment_id],
        filter_string=f"source_run_id = '{info['run_id']}'")
    assert [(m.name, m.model_type, m.status.to_int()) for m in logged] == [("clf", "sklearn", 2)]


def test_failed_notebook_is_failed_in_mlflow(run_api) -> None:  # type: ignore[no-untyped-def]
    record = run_api("raises")
    info = record["mlflow"]
    mlrun = client(info["tracking_uri"]).get_run(info["run_id"])
    assert mlrun.info.status == "FAILED" and mlrun.data.tags["nbops.status"] == "failed"
    assert "ValueError: bad value" in mlrun.data.tags["nbops.error"]
    assert "ValueError: bad value" in mlrun.data.tags["mlflow.note.content"]


def test_pipeline_parent_run_carries_the_summary_and_a_cached_rerun_adds_none(
        tmp_path: Path) -> None:
    import yaml

    produce, consume = str(NOTEBOOKS / "produce.ipynb"), str(NOTEBOOKS / "consume.ipynb")
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump({
        "name": "tiny", "stages": {
            "produce": {"template": produce, "parameters": {"n": 3}},
            "consume": {"template": consume, "parameters": {
                "path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}}},
        "summary": {"total": "${produce.outputs.total}"}}))
    runs = tmp_path / "runs"
    first = cli("pipeline", "run", str(file), "--json", "--runs-dir", str(runs), cwd=tmp_path,
                env={"NBOPS_TRIGGER": "schedule", "NBOPS_CYCLE": "cycle-7"})
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)["mlflow"]
    mlflow = client(info["tracking_uri"])
    parent = mlflow.get_run(info["run_id"])
    assert parent.data.tags["summary.total"] == str(json.loads(first.stdout)["summary"]["total"])
    assert "| total |" in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["mlflow.runName"].startswith("pipeline tiny ")
    experiment = parent.info.experiment_id
    before = len(mlflow.search_runs([experiment]))
    second = cli("pipeline", "run", str(file), "--json", "--runs-dir", str(runs), cwd=tmp_path)
    assert second.returncode == 0 and json.loads(second.stdout)["mlflow"] is None
    assert len(mlflow.search_runs([experiment])) == before  # no empty parent run
    consume = json.loads(first.stdout)["stages"]["consume"]["run_id"]
    consumed = json.loads((runs / consume / "run.json").read_text())
    # a cron line's NBOPS_TRIGGER=schedule reaches every stage's record and MLflow run
    assert consumed["origin"]["trigger"] == "schedule"
    assert consumed["origin"]["cycle"] == "cycle-7"
    tags = mlflow.get_run(consumed["mlflow"]["run_id"]).data.tags
    assert tags["nbops.trigger"] == "schedule" and tags["nbops.cycle"] == "cycle-7"
    inputs = mlflow.get_run(consumed["mlflow"]["run_id"]).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.source) for d in inputs] == [
        (Path(i["path"]).name, i["path"]) for i in consumed["inputs"]] and inputs


def test_model_in_mlflow_format_and_pickle_guard(run_api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import mlflow.pyfunc

    record = run_api("record", {"n_epochs": 1})
    uri = f"runs:/{record['mlflow']['run_id']}/models/clf"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", record["mlflow"]["tracking_uri"])  # restored after
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(Exception, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        mlflow.pyfunc.load_model(uri)  # not verified by nbops: MLflow's guard stays on
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    model = mlflow.pyfunc.load_model(uri)
    assert list(model.predict([[0.0], [3.0]])) == [0, 1]


def test_guard_defaults_to_safe(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from nbops.models import guard_pickle

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    guard_pickle()
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_tampered_model_is_never_unpickled(run_api, shared_runs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    import nbops
    from nbops.errors import ModelIntegrityError

    record = run_api("record", {"n_epochs": 1})
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    pkl = shared_runs / record["id"] / "models" / "clf" / "model.pkl"
    pkl.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelIntegrityError, match="changed since the run recorded it"):
        nbops.load_run(record["id"], runs_dir=shared_runs).load_model("clf")
    assert not marker.exists()


def test_torch_model_round_trip(run_api, shared_runs: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    import nbops

    record = run_api("torch_model", {"hidden": 3})
    assert record["status"] == "succeeded", record["error"]
    assert record["models"]["mlp"]["flavor"] == "pytorch"
    net = nbops.load_run(record["id"], runs_dir=shared_runs).load_model("mlp")
    assert net(torch.zeros(1, 2)).shape == (1, 1) and net[0].out_features == 3


def _outcome(stdout: str, runs: Path) -> Any:
    """What a failed ``nbops run --json`` says about itself (status, error, warnings, the
    tail of its kernel log), or its raw output when it printed no record."""
    try:
        record = json.loads(stdout)
    except ValueError:
        return stdout[-1500:]
    log = runs / record["id"] / "kernel.log"
    return {"status": record["status"], "error": record["error"],
            "warnings": record["warnings"],
            "kernel_log": log.read_text()[-1500:] if log.exists() else None}


def test_twelve_concurrent_runs_on_a_new_store(tmp_path: Path) -> None:
    runs = tmp_path / "runs"  # brand-new: store and experiment are created by the racing runs

    def one(i: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NBOPS, "run", str(NOTEBOOKS / "ok.ipynb"), "-p", "x", str(i),
                               "--json", "--runs-dir", str(runs)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    assert [r.returncode for r in results] == [0] * 12, [
        (_outcome(r.stdout, runs), r.stderr[-1500:]) for r in results if r.returncode]
    # mirrored by the twelve mirror children, which race on the new store too, before each
    # nbops run returned
    records = [json.loads(r.stdout) for r in results]
    assert all(r["mlflow"]["synced"] for r in records)
    assert sorted(r["outputs"]["y"] for r in records) == [2 * i for i in range(12)]
    assert len(list(runs.glob("*/run.json"))) == 12
    from nbops.tracking.mlflow import MlflowTracker as Tracker
    from nbops.tracking.uri import default_uri

    assert {r["mlflow"]["tracking_uri"] for r in records} == {default_uri(runs)}
    tracker = Tracker(default_uri(runs), runs)
    assert tracker.count_runs() == 12
    assert {r["mlflow"]["experiment_id"] for r in records} == {tracker.experiment_id}
    for r in records:
        assert tracker.run_status(r["mlflow"]["run_id"]) == "FINISHED"


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A real ``mlflow server`` on loopback, its store and artifacts in ``folder``."""
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_http(f"http://127.0.0.1:{port}/health", proc, "mlflow server")
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Any:
    port = free_port()
    proc = start_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}", tmp_path / "server-artifacts"
    stop_server(proc)


def test_bad_tracking_uris_are_refused_before_anything_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    nowhere = tmp_path / "no" / "such" / "folder"
    for uri, needle in ((f"http://127.0.0.1:{free_port()}", "cannot reach the MLflow server"),
                        (f"file://{tmp_path}/store", "file store, which MLflow 3 refuses"),
                        (str(tmp_path / "store"), "file store, which MLflow 3 refuses"),
                        (f"sqlite:///{nowhere}/mlflow.db", "which does not exist")):
        done = cli("run", str(NOTEBOOKS / "ok.ipynb"), "--runs-dir", str(runs),
                   "--tracking-uri", uri, cwd=tmp_path, timeout=60)
        assert done.returncode == 2, (uri, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr
        assert not runs.exists() and not (tmp_path / "no").exists()


def test_a_server_down_at_the_end_leaves_the_run_succeeded_and_runs_sync_repairs_it(
        tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    runs = tmp_path / "runs"
    try:
        proc = subprocess.Popen([*NBOPS, "run", str(NOTEBOOKS / "sleeps.ipynb"), "-p",
                                 "seconds", "4", "--json", "--runs-dir", str(runs),
                                 "--tracking-uri", uri, "--wait-mirror"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and not any(
                "before_sleep" in p.read_text() for p in runs.glob("*/events.jsonl")):
            time.sleep(0.2)
        stop_server(server)  # the server dies while the notebook runs
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        record = json.loads(out)
        assert record["status"] == "succeeded" and record["mlflow"]["synced"] is False
        assert any("MLflow mirror failed" in w for w in record["warnings"])
        pending = cli("runs", "sync", "--runs-dir", str(runs), timeout=300)
        assert pending.returncode == 1 and "NOT synced" in pending.stdout
        server = start_server(tmp_path, port)
        done = cli("runs", "sync", "--runs-dir", str(runs), timeout=300)
        assert done.returncode == 0 and f"{record['id']}  synced" in done.stdout
        shown = json.loads(cli("runs", "show", record["id"], "--json", "--runs-dir",
                               str(runs)).stdout)
        assert shown["mlflow"]["synced"] is True
        mlrun = client(uri).get_run(shown["mlflow"]["run_id"])
        assert mlrun.info.status == "FINISHED" and mlrun.data.tags["nbops.run_id"] == record["id"]
        again = cli("runs", "sync", "--runs-dir", str(runs))
        assert again.returncode == 0 and "every finished run is mirrored" in again.stdout
    finally:
        stop_server(server)


def test_runs_go_to_a_shared_server(mlflow_server: Any, tmp_path: Path) -> None:
    uri, artifacts = mlflow_server
    runs = tmp_path / "runs"
    done = cli("run", str(NOTEBOOKS / "record.ipynb"), "--json", "--runs-dir", str(runs),
               "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # final and mirrored when nbops run returned
    assert record["mlflow"]["tracking_uri"] == uri and record["mlflow"]["synced"] is True
    mlrun = client(uri).get_run(record["mlflow"]["run_id"])
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["score"] == 0.5
    assert not (runs / "mlflow.db").exists()  # nothing went to the embedded store
    assert any(p.name == "MLmodel" for p in artifacts.rglob("MLmodel"))
    env_done = cli("run", str(NOTEBOOKS / "raises.ipynb"), "--json", "--runs-dir", str(runs),
                   cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    failed = json.loads(env_done.stdout)
    assert client(uri).get_run(failed["mlflow"]["run_id"]).info.status == "FAILED"
