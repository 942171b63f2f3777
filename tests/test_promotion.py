"""nbops models: promotion with a ledger, compare-and-set, evidence, approvals, rollback.

A real MLflow registry (SQLite in the runs folder) and real run records (tiny evaluate and
ab_evaluate notebooks run through the runner) as evidence; the CLI as users run it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import NOTEBOOKS, cli

pytestmark = pytest.mark.slow


def _versions(runs: Path, count: int, tags: dict[str, str] | None = None) -> list[int]:
    from mlflow.tracking import MlflowClient

    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    uri = default_uri(runs)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("t")
    run_id = client.create_run(experiment_id).info.run_id
    return [registry.register_version("m", run_id=run_id, artifact_path="models/model",
                                      tags=tags or {}, alias=None, tracking_uri=uri)
            for _ in range(count)]


def _run(runs: Path, tmp: Path, name: str, **params: Any) -> str:
    from nbops.runner import RunOptions, run

    record = run(NOTEBOOKS / f"{name}.ipynb", params,
                 options=RunOptions(runs_dir=runs, cwd=tmp, tracking_uri="none"))
    assert record["status"] == "succeeded", record["error"]
    return record["id"]


def models(runs: Path, *args: str, cwd: Path | None = None,
           user: str = "alice") -> Any:
    return cli("models", *args, "--runs-dir", str(runs), cwd=cwd,
               env={"NBOPS_USER": user, "MLFLOW_TRACKING_URI": ""})


def test_promote_roll_back_and_history_with_who_when_why(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _versions(runs, 3)
    assert models(runs, "promote", "m", "1", "--reason", "first").returncode == 0
    done = models(runs, "promote", "m", "3", "--reason", "better", user="bob")
    assert done.returncode == 0 and "champion -> v3" in done.stdout
    back = models(runs, "rollback", "m", "--reason", "v3 misbehaves")
    assert back.returncode == 0 and "champion -> v1" in back.stdout
    rows = json.loads(models(runs, "history", "m", "--json").stdout)
    assert [(r["kind"], r["previous"], r["version"], r["who"], r["reason"]) for r in rows] == [
        ("move", None, 1, "alice", "first"), ("move", 1, 3, "bob", "better"),
        ("move", 3, 1, "alice", "v3 misbehaves")]
    shown = json.loads(models(runs, "show", "m", "--json").stdout)
    assert [v["aliases"] for v in shown] == [["champion"], [], []]
    listed = json.loads(models(runs, "ls", "--json").stdout)
    assert listed[0]["aliases"] == {"champion": 1}
    # the move is mirrored to the MLflow version's tags
    from nbops.tracking.registry import get_version
    from nbops.tracking.uri import default_uri

    tag = get_version("m", 1, default_uri(runs))["tags"]["nbops.promotion.champion"]
    assert json.loads(tag)["reason"] == "v3 misbehaves"
    for bad, needle in ((("show", "nope"), "no registered model"),
                        (("promote", "m", "9"), "no version 9"),
                        (("promote", "m", "1", "--expect-current", "x"), "--expect-current")):
        failed = models(runs, *bad)
        assert failed.returncode == 2 and needle in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


def test_compare_and_set_lets_exactly_one_of_two_racing_promotions_win(
        tmp_path: Path) -> None:
    from nbops.errors import PromotionBlocked
    from nbops.promotion.service import promote
    from nbops.tracking.registry import UNSET

    runs = tmp_path / "runs"
    _versions(runs, 3)
    promote("m", 1, runs_dir=runs, who="setup")
    stale = models(runs, "promote", "m", "2", "--expect-current", "3")
    assert stale.returncode == 1 and "is v1, not v3" in stale.stderr
    outcomes: list[str] = []

    def race(version: int) -> None:
        try:
            promote("m", version, runs_dir=runs, who=f"u{version}", expected=1)
            outcomes.append(f"won {version}")
        except PromotionBlocked:
            outcomes.append(f"lost {version}")

    threads = [threading.Thread(target=race, args=(v,)) for v in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.split()[0] for o in outcomes) == ["lost", "won"], outcomes
    with pytest.raises(PromotionBlocked, match="is v"):
        promote("m", 2, runs_dir=runs, expected=UNSET)


def test_a_move_made_outside_nbops_is_shown_as_unrecorded(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nbops.tracking.uri import default_uri

    runs = tmp_path / "runs"
    _versions(runs, 2)
    models(runs, "promote", "m", "1")
    MlflowClient(default_uri(runs)).set_registered_model_alias("m", "champion", "2")
    rows = json.loads(models(runs, "history", "m", "--json").stdout)
    assert rows[-1]["kind"] == "unrecorded" and rows[-1]["version"] == 2
    assert "unrecorded" in models(runs, "history", "m").stdout


def test_policy_requires_evidence_and_approvals_that_expire_with_the_evidence(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "nbops.yaml").write_text(
        "promotion:\n  champion:\n    evidence: [evaluate_pass, ab_win]\n    approvals: 1\n")
    failing = _run(runs, tmp_path, "fake_evaluate", verdict="fail")
    passing = _run(runs, tmp_path, "fake_evaluate", verdict="pass")
    (v1,) = _versions(runs, 1, {"nbops.evaluate_run": failing})
    (v2,) = _versions(runs, 1, {"nbops.evaluate_run": passing})
    cwd = project / "sub"  # the policy is found from a subfolder of the project
    blocked = models(runs, "promote", "m", str(v1), cwd=cwd)
    assert blocked.returncode == 1 and "evidence for v1" in blocked.stderr
    assert "approvals: 0 of 1" in blocked.stderr
    proposal = models(runs, "promote", "m", str(v2), cwd=cwd)
    assert proposal.returncode == 1 and "evidence" not in proposal.stderr.split("missing:")[1]
    own = models(runs, "approve", "m", str(v2), cwd=cwd)
    assert own.returncode == 1 and "cannot approve" in own.stderr
    assert models(runs, "approve", "m", str(v2), cwd=cwd, user="bob").returncode == 0
    # new evidence appears (an A/B win for v2): bob's approval saw other evidence, so it
    # no longer counts
    _run(runs, tmp_path, "fake_ab", decision="win", model_name="m", challenger_version=v2,
         champion_version=v1)
    expired = models(runs, "promote", "m", str(v2), cwd=cwd)
    assert expired.returncode == 1 and "approvals: 0 of 1" in expired.stderr
    assert models(runs, "approve", "m", str(v2), cwd=cwd, user="carol").returncode == 0
    done = models(runs, "promote", "m", str(v2), cwd=cwd)
    assert done.returncode == 0 and "evaluate_pass" in done.stdout and "ab_win" in done.stdout
    moves = [r for r in json.loads(models(runs, "history", "m", "--json").stdout)
             if r["kind"] == "move"]
    assert moves[-1]["version"] == v2 and passing in moves[-1]["evidence"]
    (project / "nbops.yaml").write_text("promotion:\n  champion:\n    approvers: 2\n")
    bad = models(runs, "promote", "m", str(v1), cwd=cwd)
    assert bad.returncode == 2 and "unknown key(s) approvers" in bad.stderr


def test_a_torn_ledger_line_is_skipped_and_reported_and_appends_go_on(tmp_path: Path) -> None:
    from nbops.tracking import ledger

    ledger.append(tmp_path, "m", "move", "champion", 1, reason="ok")
    path = ledger.path_of(tmp_path, "m")
    with path.open("a") as handle:
        handle.write('{"seq": 2, "at": "2026')  # a crash in the middle of a write
    state = ledger.read(tmp_path, "m")
    assert state["torn"] and [e["version"] for e in state["entries"]] == [1]
    entry = ledger.append(tmp_path, "m", "move", "champion", 2, previous=1)
    assert entry["seq"] == 2
    assert [e["version"] for e in ledger.read(tmp_path, "m")["entries"]] == [1, 2]


def test_the_register_stage_promotes_through_the_project_policy(tmp_path: Path) -> None:
    from nbops.runner import RunOptions, run
    from nbops.tracking import ledger

    runs = tmp_path / "runs"
    (tmp_path / "nbops.yaml").write_text("promotion:\n  champion:\n    approvals: 1\n")
    record = run("register", {"model_name": "gated"},
                 options=RunOptions(runs_dir=runs, cwd=tmp_path))
    assert record["status"] == "succeeded", record["error"]
    assert record["outputs"]["promoted"] is False
    assert record["outputs"]["aliases"] == ["challenger"]
    kinds = [(e["kind"], e["alias"]) for e in ledger.read(runs, "gated")["entries"]]
    assert kinds == [("move", "challenger"), ("proposal", "champion")]
    approved = models(runs, "approve", "gated", "1", user="bob")
    assert approved.returncode == 0, approved.stderr
    done = models(runs, "promote", "gated", "1", cwd=tmp_path, user="bob")
    assert done.returncode == 0, done.stderr
