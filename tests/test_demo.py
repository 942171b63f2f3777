"""The README's main job: the full lifecycle pipeline, at small scale."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import ROOT, cli

pytestmark = pytest.mark.slow
DEMO = ROOT / "notebooks" / "pipeline.yaml"
SMALL = ["-p", "prepare.n_rows", "300", "-p", "train.n_estimators", "15",
         "-p", "evaluate.permutation_repeats", "1"]


def run_demo(runs: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = cli("pipeline", "run", str(DEMO), "--json", "--runs-dir", str(runs), *SMALL, *extra,
               cwd=runs.parent)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def record(runs: Path, pipeline: dict[str, Any], stage: str) -> dict[str, Any]:
    run_id = pipeline["stages"][stage]["run_id"]
    return json.loads((runs / run_id / "run.json").read_text())


def test_lifecycle_end_to_end_then_cached(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, first = run_demo(runs)
    assert code == 0, first["error"]
    assert first["order"] == ["prepare", "train", "evaluate", "register", "infer", "monitor"]
    stages = {name: record(runs, first, name) for name in first["order"]}
    assert all(r["status"] == "succeeded" for r in stages.values())
    assert stages["evaluate"]["outputs"]["verdict"] == "pass"
    assert stages["register"]["outputs"]["aliases"] == ["challenger", "champion"]
    predictions = pd.read_parquet(stages["infer"]["outputs"]["predictions_path"])
    assert len(predictions) == stages["infer"]["outputs"]["n_rows"] > 0
    assert {"prediction", "probability"} <= set(predictions.columns)
    monitor = stages["monitor"]["outputs"]
    assert monitor["action"] in ("none", "warn", "retrain", "experiment")
    assert "mean radius" in monitor["drifted_columns"]  # the simulated feature shift is found
    assert first["summary"]["registered model"] == "nbops-demo"
    for name in first["order"]:  # the stored notebooks read cleanly without a kernel
        notebook = json.loads((runs / first["stages"][name]["run_id"] / "notebook.ipynb"
                               ).read_text())
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                shown = "".join(output.get("text", "")) + "".join(
                    output.get("data", {}).get("text/plain", ""))
                assert "PosixPath(" not in shown, (name, shown[:200])
                if output.get("name") == "stderr":
                    assert "WARNING mlflow" not in shown, (name, shown[:200])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(first["mlflow"]["tracking_uri"])
    champion = client.get_model_version_by_alias("nbops-demo", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["nbops.train_run"] == first["stages"]["train"]["run_id"]
    assert champion.tags["nbops.test_sha256"] == stages["prepare"]["outputs"]["test_sha256"]

    # unchanged: every stage comes from the cache (register and infer too: what they read
    # in the registry is as their runs left it)
    code, second = run_demo(runs)
    cached = {name for name, s in second["stages"].items() if s["cached"]}
    assert code == 0 and cached == set(first["order"])
    again = record(runs, second, "register")["outputs"]
    assert (again["version"], again["aliases"]) == (1, ["challenger", "champion"])

    # someone promotes another version: a re-run must not say "v1, champion" from a cache,
    # score with the old model, or take the alias back
    from nbops.tracking import registry

    uri = first["mlflow"]["tracking_uri"]
    v2 = registry.register_version("nbops-demo", run_id=champion.run_id,
                                   artifact_path="models/model", tags=dict(champion.tags),
                                   alias=None, tracking_uri=uri)
    promoted = cli("models", "promote", "nbops-demo", str(v2), "--runs-dir", str(runs),
                   env={"MLFLOW_TRACKING_URI": ""})
    assert promoted.returncode == 0, promoted.stderr
    code, third = run_demo(runs)
    ran = {name for name, s in third["stages"].items() if not s["cached"]}
    # the stages that read the registry run again; monitor does not: infer scored with the
    # same model files, so its new predictions file holds the same bytes
    assert code == 0 and ran == {"register", "infer"}
    assert record(runs, third, "register")["outputs"]["champion_version"] == v2
    assert record(runs, third, "register")["outputs"]["aliases"] == ["challenger"]
    assert record(runs, third, "infer")["outputs"]["version"] == v2
    assert int(client.get_model_version_by_alias("nbops-demo", "champion").version) == v2
    assert len(client.search_model_versions("name = 'nbops-demo'")) == 2


def test_failed_verdict_refuses_registration(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, result = run_demo(runs, "-p", "evaluate.thresholds", "{accuracy: 1.01}")
    assert code == 1
    assert result["stages"]["evaluate"]["status"] == "succeeded"
    assert result["stages"]["register"]["status"] == "failed"
    assert result["stages"]["infer"]["status"] == "pending"
    assert "registration refused" in result["error"]
    assert "nbops pipeline run" in result["error"]
