"""The A/B decision on constructed logs with known truth (pure and fast); which versions a
test compares, from prediction logs written by the server's own writer (and one real run of
the ab_evaluate template)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbops.errors import ParameterError
from nbops.serving.abtest import choose_versions, evaluate, join_labels
from nbops.serving.predlog import PredictionLog, read_log


def _log(variant: str, predictions: np.ndarray, labels: np.ndarray, latency: float = 5.0,
         start: int = 0) -> pd.DataFrame:
    n = len(predictions)
    return pd.DataFrame({"prediction": predictions, "_label": labels,
                         "_request_id": [f"r{start + i}" for i in range(n)], "_row": 0,
                         "_variant": variant, "_version": 1 if variant == "champion" else 2,
                         "_latency_ms": latency})


def _flip(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) < share
    return np.where(wrong, 1 - labels, labels)


LABELS = np.random.default_rng(0).integers(0, 2, 2000)


def test_paired_clearly_better_challenger_wins_with_mcnemar() -> None:
    joined = pd.concat([_log("champion", _flip(LABELS, 0.2, 1), LABELS),
                        _log("shadow", _flip(LABELS, 0.1, 2), LABELS)])
    result = evaluate(joined)
    assert result["mode"] == "paired" and result["test"].startswith("McNemar")
    assert result["decision"] == "win" and result["p_value"] < 1e-6
    assert result["challenger"] > result["champion"] and result["n"] == {"pairs": 2000}


def test_identical_models_are_equivalent_and_worse_is_never_a_win() -> None:
    same = _flip(LABELS, 0.1, 1)
    joined = pd.concat([_log("champion", same, LABELS), _log("shadow", same, LABELS)])
    assert evaluate(joined)["decision"] == "equivalent"
    worse = pd.concat([_log("champion", _flip(LABELS, 0.1, 1), LABELS),
                       _log("shadow", _flip(LABELS, 0.3, 2), LABELS)])
    result = evaluate(worse)
    assert result["decision"] == "inconclusive" and "worse" in result["reason"]


def test_split_traffic_small_sample_is_inconclusive_and_says_how_much_is_needed() -> None:
    small = LABELS[:200]
    joined = pd.concat([_log("champion", _flip(small[:100], 0.2, 1), small[:100]),
                        _log("challenger", _flip(small[100:], 0.15, 2), small[100:],
                             start=100)])
    result = evaluate(joined)
    assert result["mode"] == "split" and result["decision"] == "inconclusive"
    assert result["required_n"] and result["required_n"] > 100
    assert f"about {result['required_n']} rows" in result["reason"]
    big = pd.concat([_log("champion", _flip(LABELS, 0.25, 1), LABELS),
                     _log("challenger", _flip(LABELS, 0.1, 2), LABELS, start=2000)])
    assert evaluate(big)["decision"] == "win"


def test_a_failed_guardrail_blocks_a_win() -> None:
    joined = pd.concat([_log("champion", _flip(LABELS, 0.2, 1), LABELS, latency=5.0),
                        _log("shadow", _flip(LABELS, 0.1, 2), LABELS, latency=17.0)])
    result = evaluate(joined)  # limit: 5 ms * 1.2 + 10 ms of slack
    assert result["decision"] == "inconclusive" and "latency_p95" in result["reason"]
    assert not result["guardrails"]["latency_p95"]["ok"]
    assert result["guardrails"]["latency_p95"]["limit"] == pytest.approx(16.0)
    # 4 ms more is within the default slack; without slack the ratio alone decides
    close = pd.concat([_log("champion", _flip(LABELS, 0.2, 1), LABELS, latency=5.0),
                       _log("shadow", _flip(LABELS, 0.1, 2), LABELS, latency=9.0)])
    assert evaluate(close)["decision"] == "win"
    assert "latency_p95" in evaluate(close, latency_slack_ms=0)["reason"]
    failures = pd.DataFrame({"_variant": ["shadow"] * 100, "_request_id": range(100)})
    ok_latency = pd.concat([_log("champion", _flip(LABELS, 0.2, 1), LABELS),
                            _log("shadow", _flip(LABELS, 0.1, 2), LABELS)])
    result = evaluate(ok_latency, failures)
    assert result["decision"] == "inconclusive" and "error_rate" in result["reason"]


def test_regression_paired_bootstrap() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 10, 1000)
    joined = pd.concat([_log("champion", truth + rng.normal(0, 3, 1000), truth),
                        _log("shadow", truth + rng.normal(0, 1, 1000), truth)])
    result = evaluate(joined)
    assert result["task"] == "regression" and result["metric"] == "rmse"
    assert result["decision"] == "win" and result["challenger"] < result["champion"]


def test_labels_join_by_request_and_row_and_say_what_is_missing() -> None:
    log = _log("champion", np.array([1, 0]), np.array([0, 0])).drop(columns="_label")
    labels = pd.DataFrame({"request_id": ["r0", "r1"], "row": [0, 0], "y": [1, 1]})
    joined = join_labels(log, labels, "y")
    assert list(joined["_label"]) == [1, 1]
    with pytest.raises(ValueError, match="label"):
        join_labels(log, labels, "label")


def _sessions(folder: Path, *sessions: tuple[int, int], n: int = 60) -> pd.DataFrame:
    """One server session (its own writer, as a server process has) per (champion, shadow)
    pair, an hour apart, ``n`` requests each (shadow 0: none); the champion is right on 80 %
    of rows, the shadow on all. Returns the labels."""
    start = datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
    labels = []
    for s, (champion, shadow) in enumerate(sessions):
        log = PredictionLog(folder)
        rows: list[Any] = []
        for i in range(n):
            at, label = (start + timedelta(hours=s, seconds=i)).isoformat(), i % 2
            labels.append({"request_id": f"s{s}-r{i}", "row": 0, "label": label})
            for variant, version, right in (("champion", champion, i % 5 != 0),
                                            ("shadow", shadow, True)):
                if version:
                    rows.append({"request_id": f"s{s}-r{i}", "row": 0, "time": at,
                                 "model": "m", "version": version, "variant": variant,
                                 "latency_ms": 2.0, "inputs": {"x": i},
                                 "prediction": label if right else 1 - label})
        log.append(rows)
        log.close()
    return pd.DataFrame(labels)


def test_the_two_versions_that_served_the_window_are_taken_and_a_third_is_refused(
        tmp_path: Path) -> None:
    _sessions(tmp_path / "one", (1, 2))
    sides = choose_versions(read_log(tmp_path / "one"))
    assert (sides["champion"], sides["challenger"], sides["variant"], sides["chosen"]) == (
        1, 2, "shadow", "log")
    # v2 promoted in the second session, no shadow since: still v1 against v2
    _sessions(tmp_path / "moved", (1, 2), (2, 0))
    moved = read_log(tmp_path / "moved")
    assert (choose_versions(moved)["champion"], choose_versions(moved)["challenger"]) == (1, 2)
    assert choose_versions(moved, challenger_version=2)["champion"] == 1  # one side given
    # the challenger alias moved from the champion's version to a new one
    _sessions(tmp_path / "new", (1, 1), (1, 3))
    sides = choose_versions(read_log(tmp_path / "new"))
    assert (sides["champion"], sides["challenger"]) == (1, 3)

    _sessions(tmp_path / "three", (1, 2), (2, 3))
    logged = read_log(tmp_path / "three")
    with pytest.raises(ParameterError) as three:
        choose_versions(logged)
    message = str(three.value)
    assert "3 versions served the window" in message
    assert "v1 (champion), v2 (champion, shadow), v3 (shadow)" in message
    assert "-p champion_version 2 -p challenger_version 3" in message  # the pair serving last
    assert "-p window" in message
    sides = choose_versions(logged, 2, 3)
    assert (sides["champion"], sides["challenger"], sides["chosen"]) == (2, 3, "parameters")
    for one_side in ({"challenger_version": 3}, {"champion_version": 1}):
        with pytest.raises(ParameterError, match="they pair up more than one way"):
            choose_versions(logged, **one_side)  # v1 or v2 against v3; v1 against v2 or v3
    with pytest.raises(ParameterError, match="-p challenger_version 1: v1 did not answer as "
                                             "shadow"):
        choose_versions(logged, 2, 1)


def test_a_version_is_never_compared_with_itself(tmp_path: Path) -> None:
    # both aliases on one version (register makes the champion the challenger too)
    _sessions(tmp_path / "same", (2, 2))
    with pytest.raises(ParameterError, match=r"only one version served the window .*"
                                             r"v2 \(champion, shadow\)"):
        choose_versions(read_log(tmp_path / "same"))
    _sessions(tmp_path / "two", (1, 2), (2, 3))
    with pytest.raises(ParameterError, match="both sides are v2: a version compared with "
                                             "itself proves nothing") as same:
        choose_versions(read_log(tmp_path / "two"), 2, 2)
    assert "Pass -p champion_version N -p challenger_version M" in str(same.value)


@pytest.mark.slow
def test_ab_evaluate_refuses_one_version_against_itself_and_says_which_it_took(
        tmp_path: Path) -> None:
    from nbops.runner import RunOptions, run

    options = RunOptions(runs_dir=tmp_path / "runs", cwd=tmp_path, tracking_uri="none")
    _sessions(tmp_path / "log", (1, 2), (2, 2)).to_csv(tmp_path / "labels.csv", index=False)
    params = {"log_path": str(tmp_path / "log"), "labels_path": str(tmp_path / "labels.csv"),
              "propose": False}
    same = run("ab_evaluate", {**params, "champion_version": 2, "challenger_version": 2},
               options=options)
    assert same["status"] == "failed" and same["error"]["ename"] == "ParameterError"
    assert "both sides are v2" in same["error"]["evalue"], same["error"]
    chosen = run("ab_evaluate", params, options=options)
    assert chosen["status"] == "succeeded", chosen["error"]
    outputs = chosen["outputs"]
    assert (outputs["champion_version"], outputs["challenger_version"]) == (1, 2)
    assert outputs["versions_from"] == "log" and outputs["decision"] == "win"
    notebook = (tmp_path / "runs" / chosen["id"] / "notebook.ipynb").read_text()
    assert "champion v1 against shadow v2 (the versions that served the window)" in notebook
