"""Pipelines: DAG checks before anything runs, data passing, caching, resume, --jobs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import NOTEBOOKS, cli

pytestmark = pytest.mark.slow
PRODUCE, CONSUME = str(NOTEBOOKS / "produce.ipynb"), str(NOTEBOOKS / "consume.ipynb")


def write(tmp_path: Path, stages: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "demo", "stages": stages}))
    return path


def diamond(tmp_path: Path, fail: bool = False) -> Path:
    ref = {"path": "${produce.outputs.path}", "total": "${produce.outputs.total}"}
    return write(tmp_path, {
        "produce": {"template": PRODUCE, "parameters": {"n": 4}},
        "left": {"template": CONSUME, "parameters": {**ref, "factor": 2}},
        "right": {"template": CONSUME, "parameters": {**ref, "factor": 3, "fail": fail}},
    })


@pytest.mark.parametrize("stages, needles", [
    ({"a": {"template": CONSUME, "parameters": {"total": "${b.outputs.scaled}"}},
      "b": {"template": CONSUME, "parameters": {"total": "${a.outputs.scaled}"}}},
     ["cycle: a -> b -> a"]),
    ({"a": {"template": CONSUME, "parameters": {"total": "${prodce.outputs.total}"}},
      "produce": {"template": PRODUCE}},
     ["unknown stage 'prodce'", "Did you mean 'produce'"]),
    ({"produce": {"template": PRODUCE},
      "a": {"template": CONSUME, "parameters": {"total": "${produce.outputs.totl}"}}},
     ["unknown output 'totl'", "declares: path, total"]),
    ({"produce": {"template": PRODUCE, "parameters": {"nn": 3}}},
     ["unknown parameter 'nn'", "Did you mean 'n'"]),
    ({"produce": {"template": PRODUCE, "parameters": {"n": "many"}}},
     ["parameter 'n'", "expects int"]),
    ({"produce": {"template": "no_such_template"}}, ["unknown template"]),
    ({"produce": {"template": PRODUCE, "after": ["ghost"]}}, ["unknown stage 'ghost'"]),
])
def test_dag_errors_exit_2_before_anything_runs(tmp_path: Path, stages: dict[str, Any],
                                                needles: list[str]) -> None:
    file = write(tmp_path, stages)
    done = cli("pipeline", "run", str(file), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr
    assert not (tmp_path / "runs").exists()


def test_every_problem_of_a_pipeline_file_is_reported_at_once(tmp_path: Path) -> None:
    file = write(tmp_path, {
        "produce": {"template": PRODUCE, "parameters": {"n": "many", "nn": 2}},
        "left": {"template": CONSUME, "parameters": {"total": "${produce.outputs.totl}",
                                                     "factr": 2}},
        "right": {"template": "no_such_template"},
        "last": {"template": CONSUME, "parameters": {"total": "${right.outputs.total}"},
                 "after": ["ghost"]},
    })
    done = cli("pipeline", "run", str(file), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert f"{file}: 6 problems:" in done.stderr, done.stderr
    expected = ["stage 'produce', parameter 'n'", "stage 'produce', parameter 'nn'",
                "stage 'left', parameter 'factr'", "stage 'left', parameter 'total'",
                "stage 'right': ", "stage 'last' runs after unknown stage 'ghost'"]
    assert len(lines) == len(expected)
    for needle in expected:
        assert sum(needle in line for line in lines) == 1, (needle, lines)
    assert not (tmp_path / "runs").exists()


def test_missing_pipeline_file(tmp_path: Path) -> None:
    done = cli("pipeline", "run", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2 and "pipeline.yaml does not exist" in done.stderr


def run_json(tmp_path: Path, file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli("pipeline", "run", str(file), "--json", "--runs-dir", str(tmp_path / "runs"),
               *args, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def stage_record(tmp_path: Path, record: dict[str, Any], stage: str) -> dict[str, Any]:
    run_id = record["stages"][stage]["run_id"]
    return json.loads((tmp_path / "runs" / run_id / "run.json").read_text())


def test_runs_passes_outputs_and_caches(tmp_path: Path) -> None:
    file = diamond(tmp_path)
    code, first = run_json(tmp_path, file, "--jobs", "2")
    assert code == 0 and first["status"] == "succeeded"
    assert first["order"][0] == "produce"
    assert {s["cached"] for s in first["stages"].values()} == {False}
    assert stage_record(tmp_path, first, "left")["outputs"] == {"scaled": 12}
    assert stage_record(tmp_path, first, "right")["outputs"] == {"scaled": 18}
    produce = stage_record(tmp_path, first, "produce")
    assert stage_record(tmp_path, first, "left")["parameters"]["path"] == produce["outputs"]["path"]
    assert stage_record(tmp_path, first, "left")["pipeline"]["run_id"] == first["id"]
    left, right = stage_record(tmp_path, first, "left"), stage_record(tmp_path, first, "right")
    assert left["started_at"] < right["ended_at"] and right["started_at"] < left["ended_at"]
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(first["mlflow"]["tracking_uri"])
    child = mlflow.get_run(stage_record(tmp_path, first, "left")["mlflow"]["run_id"])
    assert child.data.tags["mlflow.parentRunId"] == first["mlflow"]["run_id"]
    assert mlflow.get_run(first["mlflow"]["run_id"]).info.status == "FINISHED"

    code, second = run_json(tmp_path, file)
    assert code == 0 and all(s["cached"] for s in second["stages"].values())
    assert [second["stages"][n]["run_id"] for n in first["order"]] == \
        [first["stages"][n]["run_id"] for n in first["order"]]
    show = cli("pipeline", "show", str(file), "--runs-dir", str(tmp_path / "runs"))
    assert show.returncode == 0 and show.stdout.count("cached (run") == 3

    code, third = run_json(tmp_path, file, "-p", "left.factor", "5")
    assert third["stages"]["produce"]["cached"] and third["stages"]["right"]["cached"]
    assert not third["stages"]["left"]["cached"]
    assert stage_record(tmp_path, third, "left")["outputs"] == {"scaled": 30}

    code, forced = run_json(tmp_path, file, "--force")
    assert code == 0 and not any(s["cached"] for s in forced["stages"].values())


def test_failure_stops_and_rerun_resumes(tmp_path: Path) -> None:
    file = diamond(tmp_path, fail=True)
    code, failed = run_json(tmp_path, file)
    assert code == 1 and failed["status"] == "failed"
    assert failed["stages"]["right"]["status"] == "failed"
    assert "at stage 'right'" in failed["error"] and "asked to fail" in failed["error"]
    assert "nbops pipeline run" in failed["error"] and "reused from the cache" in failed["error"]
    notebook = tmp_path / "runs" / failed["stages"]["right"]["run_id"] / "notebook.ipynb"
    assert "nbops-failed-cell" in notebook.read_text()

    code, resumed = run_json(tmp_path, file, "-p", "right.fail", "false")
    assert code == 0 and resumed["status"] == "succeeded"
    assert resumed["stages"]["produce"]["cached"]
    assert resumed["stages"]["produce"]["run_id"] == failed["stages"]["produce"]["run_id"]
    assert not resumed["stages"]["right"]["cached"]


def test_tampered_cache_entry_is_not_reused(tmp_path: Path) -> None:
    file = write(tmp_path, {"produce": {"template": PRODUCE, "parameters": {"n": 2}}})
    _, first = run_json(tmp_path, file)
    run_id = first["stages"]["produce"]["run_id"]
    (tmp_path / "runs" / run_id / "artifacts" / "data.txt").write_text("tampered")
    _, second = run_json(tmp_path, file)
    assert not second["stages"]["produce"]["cached"]
    assert second["stages"]["produce"]["run_id"] != run_id


def test_on_drift_retrain_reruns_training_once(tmp_path: Path) -> None:
    train, monitor = str(NOTEBOOKS / "fake_train.ipynb"), str(NOTEBOOKS / "fake_monitor.ipynb")
    file = write(tmp_path, {
        "produce": {"template": PRODUCE},
        "train": {"template": train, "after": ["produce"]},
        "monitor": {"template": monitor, "parameters": {
            "model_id": "${train.outputs.model_id}", "action": "retrain"}},
    })
    code, plain = run_json(tmp_path, file)
    assert code == 0 and "retrained" not in plain
    code, result = run_json(tmp_path, file, "--on-drift", "retrain")
    assert code == 0 and result["status"] == "succeeded"
    retrained = result["retrained"]
    assert retrained["trigger"] == "monitor" and retrained["stages"] == ["train", "monitor"]
    assert result["stages"]["produce"]["cached"]
    assert not result["stages"]["train"]["cached"]
    assert result["stages"]["train"]["run_id"] != retrained["previous_runs"]["train"]
    new_model = stage_record(tmp_path, result, "train")["outputs"]["model_id"]
    assert stage_record(tmp_path, result, "monitor")["parameters"]["model_id"] == new_model
