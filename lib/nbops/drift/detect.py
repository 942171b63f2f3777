"""Drift between a reference and a current dataset, as plain data.

Rules (documented in the report):
- numeric, datetime (as time) and text (as string length) columns: two-sample
  Kolmogorov-Smirnov for the p-value; Wasserstein-1 divided by a guarded reference scale
  as the effect size; PSI over reference deciles.
- categorical and boolean columns: chi-square with levels of expected count < 5 pooled;
  Jensen-Shannon distance (base 2) as the effect size; PSI over levels.
- p-values are adjusted across tested columns (Benjamini-Hochberg by default, or
  Bonferroni). A distribution drifts when the adjusted p-value is below ``alpha`` *and* the
  effect size exceeds the threshold of its kind: a real-but-tiny change on a huge sample is
  reported (``significant_only``) without alarming.
- Separately: the missing share (two-proportion test and a change over 5 points), and
  levels unseen in the reference beyond what a long rare tail predicts (Good-Turing:
  the reference's share of singletons), either of which also marks the column drifted.
- Policy: the share of drifted features (or, with labels and predictions on both sides,
  the performance drop) mapped to none / warn / retrain / experiment.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .columns import (
    MAX_VOCABULARY,
    as_numbers,
    infinite_count,
    kind_of,
    parse_times,
    role_of,
    token_counts,
)
from .report import DriftColumn, DriftReport, MissingShare, Policy

DEFAULT_EFFECT = {"numeric": 0.15, "datetime": 0.15, "text": 0.15, "categorical": 0.1,
                  "boolean": 0.1}


def compare(reference: pd.DataFrame, current: pd.DataFrame, *, target: str | None = None,
            prediction: str | None = None, timestamp: str | None = None, alpha: float = 0.05,
            effect_thresholds: dict[str, float] | None = None, multiplicity: str = "bh",
            policy: Policy | None = None, measure: str = "auto") -> DriftReport:
    """Compare two DataFrames column by column and decide an action.

    Args:
        measure: what the policy applies to: ``share`` of drifted features,
            ``performance`` drop (needs target and prediction on both sides), or ``auto``.

    Raises:
        ValueError: empty data, no common columns, or an unknown option.
    """
    _check_inputs(reference, current, measure, multiplicity)
    _check_columns(reference, current, {"target": target, "prediction": prediction,
                                         "timestamp": timestamp})
    thresholds = {**DEFAULT_EFFECT, **(effect_thresholds or {})}
    explicit = {col: role for role, col in (("target", target), ("prediction", prediction),
                                            ("timestamp", timestamp)) if col}
    common = [c for c in reference.columns if c in current.columns]
    kinds = {c: (kind_of(reference[c]), kind_of(current[c])) for c in common}
    schema = {"added": [str(c) for c in current.columns if c not in reference.columns],
              "removed": [str(c) for c in reference.columns if c not in current.columns],
              "type_changed": [str(c) for c in common if kinds[c][0] != kinds[c][1]]}
    columns = {str(c): _column(reference[c], current[c], str(c), explicit, kinds[c])
               for c in common}
    tested = [n for n, c in columns.items() if c["test"] != "none"]
    method = "bonferroni" if multiplicity == "bonferroni" else "benjamini-hochberg"
    for name, p in zip(tested, stats.adjust([columns[n]["p_value"] for n in tested],
                                            multiplicity), strict=True):
        columns[name]["p_value"] = p
    for col in columns.values():
        _decide(col, alpha, thresholds)
    return _report(reference, current, columns, schema, method, measure, policy or Policy(),
                   target, prediction)


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame, measure: str,
                  multiplicity: str) -> None:
    if measure not in ("auto", "share", "performance"):
        raise ValueError(f"unknown measure {measure!r}: use auto, share or performance")
    if multiplicity not in ("bh", "bonferroni"):
        raise ValueError(f"unknown multiplicity {multiplicity!r}: use bh or bonferroni")
    if len(reference) == 0 or len(current) == 0:
        raise ValueError("empty data: the reference has "
                         f"{len(reference)} rows and the current batch {len(current)}")
    if not set(reference.columns) & set(current.columns):
        raise ValueError("the reference and the current data have no column in common")


def _check_columns(reference: pd.DataFrame, current: pd.DataFrame,
                   named: dict[str, str | None]) -> None:
    for side, frame in (("reference", reference), ("current", current)):
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        if duplicated:
            raise ValueError(f"the {side} data has duplicate column names: "
                             f"{', '.join(duplicated)}; rename them so each is unique")
    for role, column in named.items():
        if column and column not in reference.columns and column not in current.columns:
            raise ValueError(f"the {role} column {column!r} is in neither the reference "
                             "nor the current data")


def _column(ref: pd.Series, cur: pd.Series, name: str, explicit: dict[str, str],
            kinds: tuple[str, str]) -> DriftColumn:
    kind, current_kind = kinds
    role = role_of(name, ref, kind, explicit)
    col: DriftColumn = {"kind": kind, "role": role, "test": "none", "statistic": 0.0,
                           "p_value": 1.0, "effect_size": 0.0, "psi": 0.0, "drift": False,
                           "significant_only": False, "missing": _missing(ref, cur, kind),
                           "unseen_levels": {}, "vanished_levels": [], "warnings": []}
    if role == "id":
        col["warnings"].append("near-unique values: treated as an id and not tested")
        return col
    try:
        result = _test(ref, cur, kind, current_kind, col)
    except (TypeError, ValueError) as exc:  # a bad column never takes down the report
        col["warnings"].append(f"not tested: {type(exc).__name__}: {exc}")
        return col
    col["test"], col["statistic"], col["p_value"] = result.test, result.statistic, result.p_value
    col["effect_size"], col["psi"], col["histogram"] = (result.effect_size, result.psi,
                                                        result.histogram)
    for side, series in (("reference", ref), ("current", cur)):
        if series.notna().sum() == 0:
            col["warnings"].append(f"all values missing in the {side} data")
        elif kind == "numeric" and infinite_count(series, kind) == series.notna().sum():
            col["warnings"].append(f"all values infinite in the {side} data (counted as "
                                   "missing)")
    if kind == "datetime":
        col["time_range"] = {side: _time_range(series)
                             for side, series in (("reference", ref), ("current", cur))}
    _no_nan(col)
    return col


def _time_range(series: pd.Series) -> list[str]:
    times = parse_times(series.dropna()).dropna()
    return [times.min().isoformat(), times.max().isoformat()] if len(times) else []


def _no_nan(col: DriftColumn) -> None:
    """No statistic may be NaN in a decision: one that cannot be computed leaves the column
    untested, and the column says why."""
    bad = [k for k in ("statistic", "p_value", "effect_size", "psi")
           if not math.isfinite(float(col[k]))]
    if bad and col["test"] != "none":
        col["warnings"].append(f"not tested: {', '.join(bad)} could not be computed "
                               f"({col['test']} on these values)")
        col["test"], col["statistic"], col["p_value"] = "none", 0.0, 1.0
        col["effect_size"], col["psi"] = 0.0, 0.0


def _test(ref: pd.Series, cur: pd.Series, kind: str, current_kind: str,
          col: DriftColumn) -> stats.TestResult:
    if kind != current_kind and {kind, current_kind} != {"numeric", "boolean"}:
        raise ValueError(f"type changed from {kind} to {current_kind} (see 'schema')")
    if kind in ("categorical", "boolean"):
        r = ref.dropna().astype(str).value_counts()
        c = cur.dropna().astype(str).value_counts()
        _levels(r, c, col)
        return stats.categorical(r.to_dict(), c.to_dict())
    if kind == "text":
        return _text(ref, cur, col)
    return stats.numeric(as_numbers(ref, kind), as_numbers(cur, kind))


OTHER_TOKENS = "(other words)"


def _text(ref: pd.Series, cur: pd.Series, col: DriftColumn) -> stats.TestResult:
    """Words (chi-square over the most frequent words, the rest pooled; Jensen-Shannon
    distance) and lengths (KS; Wasserstein over a guarded spread). The column's p-value is
    the smaller one, doubled (Bonferroni over the two signals); its effect the larger."""
    r, c = token_counts(ref), token_counts(cur)
    vocabulary = r.add(c, fill_value=0).nlargest(MAX_VOCABULARY).index
    r_top = {str(t): int(r.get(t, 0)) for t in vocabulary}
    c_top = {str(t): int(c.get(t, 0)) for t in vocabulary}
    r_top[OTHER_TOKENS] = int(r.sum()) - sum(r_top.values())
    c_top[OTHER_TOKENS] = int(c.sum()) - sum(c_top.values())
    words = stats.categorical(r_top, c_top)
    lengths = stats.numeric(as_numbers(ref, "text"), as_numbers(cur, "text"))
    r_share, c_share = r / max(1, int(r.sum())), c / max(1, int(c.sum()))
    gained = (c_share - r_share.reindex(c_share.index, fill_value=0.0)).nlargest(10)
    lost = (r_share - c_share.reindex(r_share.index, fill_value=0.0)).nlargest(10)
    col["text"] = {
        "tokens_p_value": words.p_value, "tokens_effect_size": words.effect_size,
        "length_p_value": lengths.p_value, "length_effect_size": lengths.effect_size,
        "new_tokens": {str(t): float(c_share[t]) for t, v in gained.items()
                       if v > 0 and r_share.get(t, 0.0) < c_share[t] / 10},
        "vanished_tokens": {str(t): float(r_share[t]) for t, v in lost.items()
                            if v > 0 and c_share.get(t, 0.0) < r_share[t] / 10}}
    p_value = min(1.0, 2 * min(words.p_value, lengths.p_value))
    effect = max(words.effect_size, lengths.effect_size)
    return stats.TestResult("chi2+ks", words.statistic, p_value, effect, words.psi,
                            words.histogram)


def _levels(r: pd.Series, c: pd.Series, col: DriftColumn) -> None:
    unseen = [lv for lv in c.index if lv not in r.index]
    n_cur = int(c.sum())
    shares = {str(lv): float(c[lv] / n_cur) for lv in unseen}
    col["unseen_levels"] = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:20])
    col["vanished_levels"] = sorted(str(lv) for lv in r.index if lv not in c.index)[:20]
    # Good-Turing: the chance that a new draw shows a level unseen so far is about the
    # reference's share of singletons; only more new-level mass than that is an alarm.
    expected = float((r == 1).sum() / max(1, r.sum()))
    observed = float(sum(shares.values()))
    slack = 3 * math.sqrt(max(expected * (1 - expected), 1e-12) / max(1, n_cur)) + 0.01
    col["unseen_alarm"] = bool(observed > expected + slack)
    col["unseen_expected_share"] = expected


def _missing(ref: pd.Series, cur: pd.Series, kind: str) -> MissingShare:
    inf_r, inf_c = infinite_count(ref, kind), infinite_count(cur, kind)
    k1, k2 = int(ref.isna().sum()) + inf_r, int(cur.isna().sum()) + inf_c
    share_r, share_c = k1 / len(ref), k2 / len(cur)
    p = stats.two_proportion_pvalue(k1, len(ref), k2, len(cur))
    return {"reference": share_r, "current": share_c, "p_value": p,
            "drift": bool(abs(share_c - share_r) > 0.05 and p < 0.01),
            "infinite": {"reference": inf_r / len(ref), "current": inf_c / len(cur)}}


def _decide(col: DriftColumn, alpha: float, thresholds: dict[str, float]) -> None:
    significant = col["test"] != "none" and col["p_value"] < alpha
    large = col["effect_size"] > thresholds[col["kind"]]
    col["significant_only"] = bool(significant and not large)
    col["drift"] = bool((significant and large) or col["missing"]["drift"]
                        or col.get("unseen_alarm", False))


def _report(reference: pd.DataFrame, current: pd.DataFrame, columns: dict[str, DriftColumn],
            schema: dict[str, list[str]], method: str, measure: str, policy: Policy,
            target: str | None, prediction: str | None) -> DriftReport:
    features = [c for c in columns.values() if c["role"] == "feature"]
    share = sum(c["drift"] for c in features) / max(1, len(features))
    performance = _performance(reference, current, target, prediction)
    has_drop = performance is not None and performance.get("drop") is not None
    if measure == "performance" and not has_drop:
        raise ValueError("measure 'performance' needs target and prediction on both sides")
    label, value = "share of drifted features", share
    if measure != "share" and has_drop and performance is not None:
        label, value = "performance drop", max(0.0, float(performance["drop"]))
    warnings = []
    smallest = min(len(reference), len(current))
    if smallest < 100:
        warnings.append(f"small sample ({smallest} rows): only large changes can be detected")
    if any(schema.values()):
        warnings.append("schema changed: see 'schema'; common columns were still compared")
    untested = [n for n, c in columns.items()
                if any(w.startswith("not tested") for w in c["warnings"])]
    if untested:
        warnings.append(f"not tested: {', '.join(untested)} (each column's warnings say why)")
    return DriftReport(columns, schema, share, columns.get(prediction or ""),
                       columns.get(target or ""), performance, policy.action(value), label,
                       value, method, policy, len(reference), len(current), warnings)


def _performance(reference: pd.DataFrame, current: pd.DataFrame, target: str | None,
                 prediction: str | None) -> dict[str, Any] | None:
    if not target or not prediction or not {target, prediction} <= set(current.columns):
        return None
    regression = kind_of(current[target]) == "numeric" and current[target].nunique() > 20

    def score(frame: pd.DataFrame) -> float:
        y, p = frame[target], frame[prediction]
        if regression:
            return float(np.sqrt(np.mean((y.astype(float) - p.astype(float)) ** 2)))
        return float((y == p).mean())

    metric = "rmse" if regression else "accuracy"
    result: dict[str, Any] = {"metric": metric, "current": score(current), "reference": None,
                              "drop": None}
    if {target, prediction} <= set(reference.columns):
        ref = score(reference)
        drop = (result["current"] - ref) / (abs(ref) or 1.0) if regression else ref - result[
            "current"]
        result.update(reference=ref, drop=float(drop))
    return result
