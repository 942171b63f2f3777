"""The registry keeps its claims: a promote to the alias's own version is no move, a rollback
goes to a different version, a model is registered once (from any copy of the project),
and a tie never promotes.

A real MLflow registry (SQLite in the runs folder), the real ``register`` template run
through the runner, the CLI as users run it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_promotion import _versions, models

pytestmark = pytest.mark.slow


def _moves(runs: Path, model: str = "m") -> list[tuple[int | None, int]]:
    rows = json.loads(models(runs, "history", model, "--json").stdout)
    return [(r["previous"], r["version"]) for r in rows if r["kind"] == "move"]


def test_promoting_the_version_the_alias_holds_records_nothing(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nbops.tracking.registry import HISTORY_TAG
    from nbops.tracking.uri import default_uri

    runs = tmp_path / "runs"
    _versions(runs, 2)
    assert models(runs, "promote", "m", "1").returncode == 0
    assert models(runs, "promote", "m", "2").returncode == 0
    mlflow = MlflowClient(default_uri(runs))

    def mirrored() -> tuple[str, str]:  # the alias history and the version's move tag
        return (mlflow.get_registered_model("m").tags[HISTORY_TAG + "champion"],
                mlflow.get_model_version("m", "2").tags["nbops.promotion.champion"])

    before = mirrored()
    again = models(runs, "promote", "m", "2", "--expect-current", "2")
    assert again.returncode == 0, again.stderr
    assert "champion already points to v2; nothing recorded" in again.stdout
    assert _moves(runs) == [(None, 1), (1, 2)]  # no ledger entry
    stale = models(runs, "promote", "m", "2", "--expect-current", "1")  # a stale view
    assert stale.returncode == 1 and "is v2, not v1" in stale.stderr
    assert mirrored() == before
    back = models(runs, "rollback", "m")
    assert back.returncode == 0 and "champion -> v1 (rolled back)" in back.stdout
    assert _moves(runs) == [(None, 1), (1, 2), (2, 1)]


def test_a_no_op_promotion_asks_no_policy_and_proposes_nothing(tmp_path: Path) -> None:
    from nbops.promotion.service import promote
    from nbops.tracking import ledger

    runs = tmp_path / "runs"
    (v1,) = _versions(runs, 1)
    promote("m", v1, runs_dir=runs, who="setup")
    (tmp_path / "nbops.yaml").write_text("promotion:\n  champion:\n    approvals: 1\n")
    again = models(runs, "promote", "m", str(v1), cwd=tmp_path)
    assert again.returncode == 0 and "nothing recorded" in again.stdout, again.stderr
    assert [e["kind"] for e in ledger.read(runs, "m")["entries"]] == ["move"]


def test_rollback_skips_the_no_op_moves_an_older_nbops_recorded(tmp_path: Path) -> None:
    """A ledger (and its MLflow mirror) from before the fix holds "v2 -> v2" entries."""
    from mlflow.tracking import MlflowClient

    from nbops.tracking import ledger
    from nbops.tracking.registry import HISTORY_TAG
    from nbops.tracking.uri import default_uri

    runs = tmp_path / "runs"
    _versions(runs, 2)
    models(runs, "promote", "m", "1")
    models(runs, "promote", "m", "2")
    mlflow = MlflowClient(default_uri(runs))
    history = json.loads(mlflow.get_registered_model("m").tags[HISTORY_TAG + "champion"])
    for reason in ("promoted", "rollback from v2"):  # what the old code wrote
        entry = ledger.append(runs, "m", "move", "champion", 2, previous=2, reason=reason)
        history.append({"version": 2, "previous": 2, "reason": reason, "at": entry["at"]})
    mlflow.set_registered_model_tag("m", HISTORY_TAG + "champion", json.dumps(history))
    back = models(runs, "rollback", "m")
    assert back.returncode == 0 and "champion -> v1 (rolled back)" in back.stdout, back.stderr
    assert _moves(runs)[-1] == (2, 1)
    assert str(mlflow.get_model_version_by_alias("m", "champion").version) == "1"


def _register(runs: Path, cwd: Path, **params: Any) -> dict[str, Any]:
    from nbops.runner import RunOptions, run

    record = run("register", {"model_name": "demo", **params},
                 options=RunOptions(runs_dir=runs, cwd=cwd))
    assert record["status"] == "succeeded", record["error"]
    return dict(record)


def _versions_of(runs: Path, model: str = "demo") -> list[int]:
    return [v["version"] for v in json.loads(models(runs, "show", model, "--json").stdout)]


def test_a_model_is_registered_once_even_from_a_copied_project(tmp_path: Path) -> None:
    """The register stage run again on the same model, in the project and in a ``cp -a``
    copy of it (other paths, the same run ids), reuses v1 and moves no alias."""
    project = tmp_path / "project"
    project.mkdir()
    first = _register(project / "runs", project)  # by hand: a baseline model of its own
    assert first["outputs"]["version"] == 1 and first["outputs"]["promoted"] is True

    def again(root: Path) -> dict[str, Any]:
        run_dir = root / "runs" / first["id"]
        record = _register(root / "runs", root, model_path=str(run_dir / "models" / "model"),
                           test_path=str(run_dir / "artifacts" / "baseline_test.parquet"),
                           verdict="pass", train_run=first["id"])
        return {**record["outputs"], "run": record["id"]}

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(project), str(copy)], check=True)
    for root in (copy, project):
        outputs = again(root)
        assert (outputs["version"], outputs["promoted"]) == (1, False)
        assert outputs["champion_version"] == 1 and outputs["reused"] is True
        said = (root / "runs" / outputs["run"] / "notebook.ipynb").read_text()
        assert "demo v1 already holds this model" in said and "reused" in said
        assert _versions_of(root / "runs") == [1]
        assert _moves(root / "runs", "demo") == [(None, 1), (None, 1)]  # challenger, champion
    shutil.rmtree(project)  # the copy stands on its own
    assert again(copy)["reused"] is True and _versions_of(copy / "runs") == [1]


def test_register_model_matches_files_folder_or_source(tmp_path: Path) -> None:
    from nbops.models import model_digest
    from nbops.promotion.registration import register_model, same_model
    from nbops.tracking.registry import ModelVersion

    folder = tmp_path / "runs" / "20260101T000000-train-abcdef" / "models" / "model"
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    digest = model_digest(folder)
    elsewhere = tmp_path / "moved" / "runs" / folder.relative_to(tmp_path / "runs")
    shutil.copytree(folder, elsewhere)
    assert model_digest(elsewhere) == digest
    base: ModelVersion = {"name": "m", "version": 1, "aliases": [], "run_id": "r",
                          "source": "runs:/r/models/model", "tags": {}}
    assert "files" in same_model({**base, "tags": {"nbops.model_sha256": digest}}, digest,
                                 "/x", "runs:/s/models/model")
    assert "folder" in same_model({**base, "tags": {"nbops.model_path": str(folder)}}, "0",
                                  str(elsewhere), "runs:/s/models/model")
    assert "source" in same_model(base, "0", "/x", "runs:/r/models/model")
    assert same_model(base, "0", "/x", "runs:/s/models/model") == ""
    runs = tmp_path / "runs"
    run_id = _mlflow_run(runs)
    first = register_model("m", folder, run_id=run_id, runs_dir=runs)
    second = register_model("m", elsewhere, run_id=run_id, artifact_path="other",
                            runs_dir=runs)  # only the files match
    (elsewhere / "extra.txt").write_text("another model")
    third = register_model("m", elsewhere, run_id=run_id, artifact_path="other",
                           runs_dir=runs)  # other files; the folder matches (portably)
    assert [(r["version"], r["reused"]) for r in (first, second, third)] == [
        (1, False), (1, True), (1, True)]
    assert "folder" in third["matched"]
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "MLmodel").write_text("flavors: {x: 1}\n")
    fourth = register_model("m", tmp_path / "new", run_id=run_id, artifact_path="new",
                            runs_dir=runs)
    assert (fourth["version"], fourth["reused"]) == (2, False)


def _mlflow_run(runs: Path) -> str:
    from mlflow.tracking import MlflowClient

    from nbops.tracking.uri import default_uri

    client = MlflowClient(default_uri(runs))
    return str(client.create_run(client.create_experiment("t")).info.run_id)


def test_a_tie_never_promotes(tmp_path: Path) -> None:
    """Two models with other files but the same predictions score the same: the second is
    registered but the champion stays."""
    import numpy as np
    import pandas as pd
    from test_promotion import _run

    runs = tmp_path / "runs"
    rng = np.random.default_rng(1)
    test = pd.DataFrame({"a": rng.normal(0, 1, 100), "b": rng.normal(0, 1, 100),
                         "colour": rng.choice(["red", "blue"], 100)})
    test["target"] = (test["a"] + test["b"] > 0).astype(int)
    test.loc[:4, "target"] = 1 - test.loc[:4, "target"]  # five rows no model gets right
    test.to_parquet(tmp_path / "test.parquet", index=False)
    outputs = []
    for slow_below in (-1000.0, -999.0):  # no row is that low: the same predictions
        trained = _run(runs, tmp_path, "serve_model", slow_below=slow_below)
        outputs.append(_register(
            runs, tmp_path, model_path=str(runs / trained / "models" / "model"),
            test_path=str(tmp_path / "test.parquet"), verdict="pass",
            primary_metric="accuracy", train_run=trained)["outputs"])
    first, second = outputs
    assert (first["version"], first["promoted"]) == (1, True)
    assert second["score"] == second["champion_score"] == first["score"] < 1
    assert (second["version"], second["promoted"], second["champion_version"]) == (2, False, 1)
    assert second["aliases"] == ["challenger"] and second["reused"] is False


def test_only_a_strictly_better_score_beats_the_champion() -> None:
    from nbops.promotion.policy import beats

    assert beats(0.9, None) and not beats(0.9, 0.9) and beats(0.91, 0.9)
    assert beats(0.1, 0.2, lower_is_better=True) and not beats(0.2, 0.2, True)
    assert not beats(float("nan"), 0.5)
