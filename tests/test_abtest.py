"""The A/B decision on constructed logs with known truth (pure and fast)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbops.serving.abtest import evaluate, join_labels


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
