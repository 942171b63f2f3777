"""Stage templates through the real runner with small data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nbops.runner import RunOptions, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("template-runs")


def stage(name: str, runs: Path, **parameters: Any) -> dict[str, Any]:
    record = run(name, parameters, options=RunOptions(runs_dir=runs, cwd=runs))
    assert record["status"] == "succeeded", record["error"]
    # templates are jupytext-paired; the executed copy in the record must not be
    executed = json.loads((runs / record["id"] / "notebook.ipynb").read_text())
    assert "jupytext" not in executed["metadata"]
    assert not list((runs / record["id"]).glob("*.py"))
    return record


@pytest.fixture(scope="module")
def prepared(runs: Path) -> dict[str, Any]:
    return stage("prepare", runs, n_rows=300, shift="feature")["outputs"]


def test_prepare_splits_and_shifts(prepared: dict[str, Any]) -> None:
    frames = {n: pd.read_parquet(prepared[f"{n}_path"])
              for n in ("train", "test", "reference", "current")}
    assert sum(len(frames[n]) for n in ("train", "test", "reference")) == 300
    assert prepared["task"] == "classification" and prepared["n_rows"] == 300
    first = frames["reference"].columns[0]
    shift = frames["current"][first].mean() - frames["reference"][first].mean()
    assert shift > 0.5 * frames["reference"][first].std()  # the 1-sd feature shift is there
    assert set(frames["train"]["segment"]) == {"low", "mid", "high"}


def test_prepare_schema_error_names_columns(runs: Path) -> None:
    record = run("prepare", {"required_columns": {"age": "numeric", "segment": "numeric"}},
                 options=RunOptions(runs_dir=runs, cwd=runs))
    assert record["status"] == "failed"
    message = record["error"]["evalue"]
    assert "missing columns: age" in message
    assert "segment (expected numeric, found categorical)" in message


@pytest.mark.parametrize("model, extra", [
    ("logreg", {"cv_folds": 3}), ("random_forest", {"n_estimators": 10}),
    ("gradient_boosting", {"n_estimators": 10}), ("torch_mlp", {"epochs": 3, "cv_folds": 2}),
])
def test_train_models(runs: Path, prepared: dict[str, Any], model: str,
                      extra: dict[str, Any]) -> None:
    record = stage("train", runs, train_path=prepared["train_path"], model=model, **extra)
    assert record["outputs"]["model_kind"] == model
    assert record["outputs"]["train_accuracy"] > 0.8
    if "cv_folds" in extra:  # cross-validated: what a sweep should maximise
        assert 0.5 < record["outputs"]["cv_accuracy"] <= 1.0
        assert record["metrics"]["cv_accuracy"] == record["outputs"]["cv_accuracy"]
    else:
        assert record["outputs"]["cv_accuracy"] is None and "cv_accuracy" not in record["metrics"]
    if model != "logreg":
        steps = next(iter(h for k, h in record["metric_history"].items() if k != "train_accuracy"))
        assert len(steps) >= 2 and steps[0]["step"] < steps[-1]["step"]
    import nbops

    loaded = nbops.load_model(record["outputs"]["model_path"])
    test = pd.read_parquet(prepared["test_path"])
    assert len(loaded.predict(test.drop(columns=["target"]))) == len(test)


def test_evaluate_verdict_and_plots(runs: Path, prepared: dict[str, Any]) -> None:
    model = stage("train", runs, train_path=prepared["train_path"])["outputs"]["model_path"]
    good = stage("evaluate", runs, model_path=model, test_path=prepared["test_path"],
                 permutation_repeats=1)
    assert good["outputs"]["verdict"] == "pass" and good["outputs"]["failures"] == []
    assert {"accuracy", "roc_auc", "f1", "log_loss"} <= set(good["metrics"])
    assert "fairness_gap.accuracy" in good["metrics"]
    figures = {a["path"] for a in good["artifacts"] if a["path"].startswith("artifacts/figures")}
    assert {f"artifacts/figures/{n}.png" for n in
            ("confusion_matrix", "roc", "calibration", "permutation_importance")} <= figures
    strict = stage("evaluate", runs, model_path=model, test_path=prepared["test_path"],
                   thresholds={"accuracy": 1.01, "log_loss": 0.0}, permutation_repeats=1)
    assert strict["outputs"]["verdict"] == "fail"
    assert len(strict["outputs"]["failures"]) == 2


def test_prepare_reads_a_csv_file(runs: Path, tmp_path: Path) -> None:
    from nbops.datasets import load_bundled

    load_bundled("wine").drop(columns=["segment"]).to_csv(tmp_path / "wine.csv", index=False)
    out = stage("prepare", runs, data_path=str(tmp_path / "wine.csv"),
                required_columns={"alcohol": "numeric"}, shift="missing")["outputs"]
    current = pd.read_parquet(out["current_path"])
    assert out["n_rows"] == 178 and current.isna().any().any()


def test_register_promotes_only_a_better_model(runs: Path, prepared: dict[str, Any]) -> None:
    good = stage("train", runs, train_path=prepared["train_path"])["outputs"]
    weak = stage("train", runs, train_path=prepared["train_path"], model="random_forest",
                 n_estimators=1, max_depth=1)["outputs"]
    common = {"test_path": prepared["test_path"], "verdict": "pass", "model_name": "promo"}
    first = stage("register", runs, model_path=good["model_path"], **common)["outputs"]
    assert first["promoted"] and first["aliases"] == ["challenger", "champion"]
    second = stage("register", runs, model_path=weak["model_path"], **common)["outputs"]
    assert not second["promoted"] and second["aliases"] == ["challenger"]
    assert second["champion_version"] == first["version"]
    assert second["score"] < second["champion_score"]


def test_infer_checks_the_signature(runs: Path, prepared: dict[str, Any], tmp_path: Path) -> None:
    model = stage("train", runs, train_path=prepared["train_path"])["outputs"]
    stage("register", runs, model_path=model["model_path"], test_path=prepared["test_path"],
          verdict="pass", model_name="sig")
    batch = pd.read_parquet(prepared["current_path"]).drop(columns=["mean radius"])
    batch["segment"] = 1.0
    batch.to_parquet(tmp_path / "bad.parquet")
    record = run("infer", {"model_name": "sig", "input_path": str(tmp_path / "bad.parquet")},
                 options=RunOptions(runs_dir=runs, cwd=runs))
    assert record["status"] == "failed"
    assert "missing columns: mean radius" in record["error"]["evalue"]
    assert "segment (model expects string" in record["error"]["evalue"]
    good = stage("infer", runs, model_name="sig", input_path=prepared["current_path"])
    assert good["outputs"]["n_rows"] == len(pd.read_parquet(prepared["current_path"]))
    by_version = stage("infer", runs, model_name="sig", version=1,
                       input_path=prepared["current_path"])
    assert by_version["outputs"]["version"] == 1
    missing = run("infer", {"model_name": "sig", "alias": "nope"},
                  options=RunOptions(runs_dir=runs, cwd=runs))
    assert missing["status"] == "failed" and missing["error"]["ename"] == "LookupError"
    assert "has no alias 'nope'" in missing["error"]["evalue"]
