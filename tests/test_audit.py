"""nbops audit MODEL: the chain from data hashes to traffic, from real records, a real MLflow
registry and ledger, and a prediction log written by the server's own writer."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import NOTEBOOKS, cli
from nbops.serving.predlog import PredictionLog, log_folder

pytestmark = pytest.mark.slow


def _run(runs: Path, tmp: Path, name: str, **params: Any) -> dict[str, Any]:
    from nbops.runner import RunOptions, run

    record = run(NOTEBOOKS / f"{name}.ipynb", params,
                 options=RunOptions(runs_dir=runs, cwd=tmp, tracking_uri="none"))
    assert record["status"] == "succeeded", record["error"]
    return dict(record)


def _register(runs: Path, tags: dict[str, str]) -> int:
    from mlflow.tracking import MlflowClient

    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    uri = default_uri(runs)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    return registry.register_version("m", run_id=run_id, artifact_path="models/model",
                                     tags=tags, alias=None, tracking_uri=uri)


def _serve_log(runs: Path, version: int) -> None:
    log = PredictionLog(log_folder(runs, "m"))
    rows: list[Any] = [
        {"request_id": f"r{i // 2}", "row": i % 2, "time": f"2026-12-01T10:00:0{i}+00:00",
         "model": "m", "version": version, "variant": "champion" if i < 4 else "shadow",
         "latency_ms": 1.0, "inputs": {"x": i}, "prediction": 1} for i in range(6)]
    rows.append({"request_id": "bad", "row": -1, "time": "2026-12-01T10:00:09+00:00",
                 "model": "m", "version": version, "variant": "champion",
                 "error": "schema: missing column x"})
    rows.append({"request_id": "other", "row": 0, "time": "2026-12-01T10:00:09+00:00",
                 "model": "m", "version": version + 1, "variant": "challenger",
                 "inputs": {"x": 0}, "prediction": 0})
    log.append(rows)
    log.close()


def test_audit_shows_the_chain_and_fails_when_the_data_changed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    produced = _run(runs, tmp_path, "produce", n=4)
    trained = _run(runs, tmp_path, "consume", path=produced["outputs"]["path"],
                   total=produced["outputs"]["total"])
    evaluated = _run(runs, tmp_path, "fake_evaluate")
    version = _register(runs, {"nbops.train_run": trained["id"],
                               "nbops.evaluate_run": evaluated["id"],
                               "nbops.register_run": "20261201T000000-register-gone00"})
    env = {"NBOPS_USER": "alice", "MLFLOW_TRACKING_URI": ""}
    promoted = cli("models", "promote", "m", str(version), "--reason", "first one",
                   "--runs-dir", str(runs), env=env)
    assert promoted.returncode == 0, promoted.stderr
    _serve_log(runs, version)

    done = cli("audit", "m", "--json", "--runs-dir", str(runs), env=env)
    trail = json.loads(done.stdout)
    assert trail["version"] == version and trail["aliases"] == ["champion"]
    assert trail["verdict"] == "pass"
    roles = [(r["role"], r["id"], r["found"]) for r in trail["runs"]]
    assert roles == [("upstream", produced["id"], True), ("train", trained["id"], True),
                     ("evaluate", evaluated["id"], True),
                     ("register", "20261201T000000-register-gone00", False)]
    train_run = trail["runs"][1]
    assert train_run["origin"]["trigger"] == "api"
    assert train_run["template"].startswith("consume@")
    assert trail["data"] == [{
        "parameter": "path", "path": produced["outputs"]["path"],
        "sha256": trained["inputs"][0]["sha256"], "read_by": trained["id"],
        "produced_by": produced["id"], "state": "ok"}]
    assert [(e["kind"], e["alias"], e["who"], e["reason"]) for e in trail["events"]] == [
        ("move", "champion", "alice", "first one")]
    assert trail["traffic"] == {"rows": 6, "requests": 3, "failed_requests": 1,
                                "by_variant": {"champion": 4, "shadow": 2},
                                "first": "2026-12-01T10:00:00+00:00",
                                "last": "2026-12-01T10:00:05+00:00"}
    assert done.returncode == 1  # the register run is not in this runs folder

    text = cli("audit", "m", "--version", str(version), "--runs-dir", str(runs), env=env)
    assert "ok       path" in text.stdout and f"from {produced['id']}" in text.stdout
    assert "NOT IN THIS RUNS FOLDER" in text.stdout
    assert "6 rows in 3 requests (champion 4, shadow 2), 1 failed requests" in text.stdout
    assert "by alice: first one" in text.stdout

    Path(produced["outputs"]["path"]).write_text("tampered")
    changed = json.loads(cli("audit", "m", "--json", "--runs-dir", str(runs), env=env).stdout)
    assert changed["data"][0]["state"] == "changed"
    Path(produced["outputs"]["path"]).unlink()
    gone = json.loads(cli("audit", "m", "--json", "--runs-dir", str(runs), env=env).stdout)
    assert gone["data"][0]["state"] == "missing"

    unknown = cli("audit", "nope", "--runs-dir", str(runs), env=env)
    assert unknown.returncode == 2 and "no registered model 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad = cli("audit", "m", "--version", "99", "--runs-dir", str(runs), env=env)
    assert bad.returncode == 2 and "has no version 99" in bad.stderr


def test_audit_in_a_copied_project_reads_the_copy_once_the_original_is_gone(
        tmp_path: Path) -> None:
    import shutil
    import subprocess

    original = tmp_path / "original"
    (original / "work").mkdir(parents=True)
    (original / "nbops.yaml").write_text("name: moved\n")
    runs = original / "runs"
    produced = _run(runs, original / "work", "produce", n=4)
    trained = _run(runs, original / "work", "consume", path=produced["outputs"]["path"],
                   total=produced["outputs"]["total"])
    evaluated = _run(runs, original / "work", "fake_evaluate")
    version = _register(runs, {"nbops.train_run": trained["id"],
                               "nbops.evaluate_run": evaluated["id"],
                               "nbops.model_path": str(runs / trained["id"] / "artifacts")})
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    shutil.rmtree(original)

    env = {"NBOPS_RUNS_DIR": "", "MLFLOW_TRACKING_URI": ""}
    done = cli("audit", "m", "--json", env=env, cwd=copy / "work")
    assert done.returncode == 0, done.stdout + done.stderr
    trail = json.loads(done.stdout)
    assert trail["version"] == version and all(r["found"] for r in trail["runs"])
    moved = str(copy / "runs" / Path(produced["outputs"]["path"]).relative_to(runs))
    assert [(d["path"], d["state"], d["produced_by"]) for d in trail["data"]] == [
        (moved, "ok", produced["id"])]
    assert trail["model_path"] == str(copy / "runs" / trained["id"] / "artifacts")
