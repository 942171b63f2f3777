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
  the performance drop) mapped to none / warn / retrain / experiment; a feature that could
  not be tested raises the action to at least warn, and an effect that overflows the
  float range counts as maximal (the test held; only its size is beyond floats).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .columns import MAX_VOCABULARY, kind_of, role_of
from .report import ACTIONS, DriftColumn, DriftReport, MissingShare, Policy, Reason
from .sources import PerformanceSpec, Scores, SideSummary, parallel_map, source_for
from .summary import SKETCH_K, ColumnPlan, ColumnSummary, Numbers, rank_error

DEFAULT_EFFECT = {"numeric": 0.15, "datetime": 0.15, "text": 0.15, "categorical": 0.1,
                  "boolean": 0.1}


def compare(reference: Any, current: Any, *, target: str | None = None,
            prediction: str | None = None, timestamp: str | None = None, alpha: float = 0.05,
            effect_thresholds: dict[str, float] | None = None, multiplicity: str = "bh",
            policy: Policy | None = None, measure: str = "auto") -> DriftReport:
    """Compare two datasets column by column and decide an action.

    Args:
        reference, current: pandas DataFrames (exact statistics), Dask DataFrames
            (summarised on the workers, numeric columns through quantile sketches), or
            streaming sources from ``nbops.drift.sources`` (``ParquetSource``...).
        measure: what the policy applies to: ``share`` of drifted features,
            ``performance`` drop (needs target and prediction on both sides), or ``auto``.

    Raises:
        ValueError: empty data, no common columns, or an unknown option.
    """
    _check_options(measure, multiplicity)
    ref_source, cur_source = source_for(reference), source_for(current)
    ref_head, cur_head = ref_source.head(), cur_source.head()
    _check_inputs(ref_head, cur_head)
    _check_columns(ref_head, cur_head, {"target": target, "prediction": prediction,
                                         "timestamp": timestamp})
    thresholds = {**DEFAULT_EFFECT, **(effect_thresholds or {})}
    explicit = {col: role for role, col in (("target", target), ("prediction", prediction),
                                            ("timestamp", timestamp)) if col}
    common = [c for c in ref_head.columns if c in cur_head.columns]
    kinds = {c: (kind_of(ref_head[c]), kind_of(cur_head[c])) for c in common}
    roles = {c: role_of(str(c), ref_head[c], kinds[c][0], explicit) for c in common}
    schema = {"added": [str(c) for c in cur_head.columns if c not in ref_head.columns],
              "removed": [str(c) for c in ref_head.columns if c not in cur_head.columns],
              "type_changed": [str(c) for c in common if kinds[c][0] != kinds[c][1]]}
    spec = _performance_spec(cur_head, target, prediction)
    sides = [source.summarise({c: ColumnPlan(kinds[c][i], roles[c] != "id") for c in common},
                              spec) for i, source in enumerate((ref_source, cur_source))]
    ref_side, cur_side = sides
    columns = dict(parallel_map(
        lambda c: (str(c), _column(ref_side.columns[c], cur_side.columns[c], roles[c],
                                   kinds[c])), common))
    tested = [n for n, c in columns.items() if c["test"] != "none"]
    method = "bonferroni" if multiplicity == "bonferroni" else "benjamini-hochberg"
    for name, p in zip(tested, stats.adjust([columns[n]["p_value"] for n in tested],
                                            multiplicity), strict=True):
        columns[name]["p_value"] = p
    for name, col in columns.items():
        _decide(col, alpha, thresholds, name in schema["type_changed"])
    exact = ref_source.mode == "exact" and cur_source.mode == "exact"
    summaries = "exact" if exact else (f"sketch: KLL k={SKETCH_K}, CDF rank error "
                                       f"<= {rank_error():.2%} per side (99% confidence)")
    return _report(ref_side, cur_side, columns, schema, method, measure, policy or Policy(),
                   target, prediction, spec, summaries)


def _check_options(measure: str, multiplicity: str) -> None:
    if measure not in ("auto", "share", "performance"):
        raise ValueError(f"unknown measure {measure!r}: use auto, share or performance")
    if multiplicity not in ("bh", "bonferroni"):
        raise ValueError(f"unknown multiplicity {multiplicity!r}: use bh or bonferroni")


def _check_inputs(reference: pd.DataFrame, current: pd.DataFrame) -> None:
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


def _performance_spec(current: pd.DataFrame, target: str | None,
                      prediction: str | None) -> PerformanceSpec | None:
    if not target or not prediction or not {target, prediction} <= set(current.columns):
        return None
    labels = current[target]
    regression = kind_of(labels) == "numeric" and labels.nunique() > 20
    return {"target": target, "prediction": prediction, "regression": regression}


def _column(ref: ColumnSummary, cur: ColumnSummary, role: str,
            kinds: tuple[str, str]) -> DriftColumn:
    kind, current_kind = kinds
    col: DriftColumn = {"kind": kind, "role": role, "test": "none", "statistic": 0.0,
                           "p_value": 1.0, "effect_size": 0.0, "psi": 0.0, "drift": False,
                           "significant_only": False, "missing": _missing(ref, cur),
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
    for side, summary in (("reference", ref), ("current", cur)):
        present = summary.rows - (summary.missing - summary.infinite)
        if present == 0:
            col["warnings"].append(f"all values missing in the {side} data")
        elif kind == "numeric" and summary.infinite == present:
            col["warnings"].append(f"all values infinite in the {side} data (counted as "
                                   "missing)")
    if kind == "datetime":
        col["time_range"] = {side: _time_range(summary.numbers)
                             for side, summary in (("reference", ref), ("current", cur))}
    _no_nan(col)
    return col


def _time_range(numbers: Numbers | None) -> list[str]:
    if numbers is None or numbers.count == 0:
        return []
    return [pd.Timestamp(round(v * 1e6), unit="us").isoformat()
            for v in (numbers.low, numbers.high)]


def _no_nan(col: DriftColumn) -> None:
    """No statistic may be NaN in a decision: one that cannot be computed leaves the column
    untested, and the column says why."""
    if col["test"] != "none" and all(math.isfinite(float(col[k]))
                                     for k in ("statistic", "p_value")):
        # the test itself held; an effect that overflowed (values near the float limit
        # moving across it) is the largest effect there is, never a reason to stop testing
        over = [k for k in ("effect_size", "psi") if not math.isfinite(float(col[k]))]
        for key in over:
            col[key] = sys.float_info.max  # type: ignore[literal-required]
        if over:
            col["warnings"].append(f"{' and '.join(over)} overflowed (values near the float "
                                   "limit): counted as maximal")
    bad = [k for k in ("statistic", "p_value", "effect_size", "psi")
           if not math.isfinite(float(col[k]))]
    if bad and col["test"] != "none":
        col["warnings"].append(f"not tested: {', '.join(bad)} could not be computed "
                               f"({col['test']} on these values)")
        col["test"], col["statistic"], col["p_value"] = "none", 0.0, 1.0
        col["effect_size"], col["psi"] = 0.0, 0.0


def _test(ref: ColumnSummary, cur: ColumnSummary, kind: str, current_kind: str,
          col: DriftColumn) -> stats.TestResult:
    if kind != current_kind and {kind, current_kind} != {"numeric", "boolean"}:
        raise ValueError(f"type changed from {kind} to {current_kind} (see 'schema')")
    if ref.overflow or cur.overflow:
        raise ValueError("more than 100,000 distinct levels: too many to count exactly "
                         "(an id or free text? name it or drop it)")
    if ref.counts is not None and cur.counts is not None:
        _levels(ref.counts, cur.counts, col)
        return stats.categorical(ref.counts.to_dict(), cur.counts.to_dict())
    if ref.numbers is None or cur.numbers is None:
        raise ValueError(f"no values to compare for a {kind} column")
    if kind == "text":
        return _text(ref, cur, col)
    return _numeric(ref.numbers, cur.numbers)


def _numeric(ref: Numbers, cur: Numbers) -> stats.TestResult:
    if ref.values is not None and cur.values is not None:
        return stats.numeric(ref.values, cur.values)
    return stats.numeric_sketch(ref, cur)


OTHER_TOKENS = "(other words)"


def _text(ref: ColumnSummary, cur: ColumnSummary, col: DriftColumn) -> stats.TestResult:
    """Words (chi-square over the most frequent words, the rest pooled; Jensen-Shannon
    distance) and lengths (KS; Wasserstein over a guarded spread). The column's p-value is
    the smaller one, doubled (Bonferroni over the two signals); its effect the larger."""
    empty = pd.Series(dtype="int64")
    r = ref.tokens if ref.tokens is not None else empty
    c = cur.tokens if cur.tokens is not None else empty
    vocabulary = r.add(c, fill_value=0).nlargest(MAX_VOCABULARY).index
    r_top = {str(t): int(r.get(t, 0)) for t in vocabulary}
    c_top = {str(t): int(c.get(t, 0)) for t in vocabulary}
    r_top[OTHER_TOKENS] = int(r.sum()) - sum(r_top.values())
    c_top[OTHER_TOKENS] = int(c.sum()) - sum(c_top.values())
    words = stats.categorical(r_top, c_top)
    assert ref.numbers is not None and cur.numbers is not None  # checked by _test
    lengths = _numeric(ref.numbers, cur.numbers)
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


def _missing(ref: ColumnSummary, cur: ColumnSummary) -> MissingShare:
    k1, k2 = ref.missing, cur.missing
    share_r, share_c = k1 / ref.rows, k2 / cur.rows
    p = stats.two_proportion_pvalue(k1, ref.rows, k2, cur.rows)
    return {"reference": share_r, "current": share_c, "p_value": p,
            "drift": bool(abs(share_c - share_r) > 0.05 and p < 0.01),
            "infinite": {"reference": ref.infinite / ref.rows,
                         "current": cur.infinite / cur.rows}}


def _decide(col: DriftColumn, alpha: float, thresholds: dict[str, float],
            type_changed: bool) -> None:
    """Drift and its reasons: the distribution (significant after adjustment *and* an
    effect over the kind's threshold), the missing share, unseen levels, or the schema (the
    column's type changed, so the model would see a different kind of value)."""
    threshold = thresholds[col["kind"]]
    significant = col["test"] != "none" and col["p_value"] < alpha
    large = col["effect_size"] > threshold
    checks: list[tuple[Reason, bool]] = [
        ("distribution", significant and large), ("missing share", col["missing"]["drift"]),
        ("unseen levels", col.get("unseen_alarm", False)),
        ("schema", type_changed and col["role"] == "feature")]
    reasons = [reason for reason, hit in checks if hit]
    col["threshold"] = threshold
    col["significant_only"] = bool(significant and not large)
    col["reasons"] = reasons
    col["drift"] = bool(reasons)


def _report(ref: SideSummary, cur: SideSummary, columns: dict[str, DriftColumn],
            schema: dict[str, list[str]], method: str, measure: str, policy: Policy,
            target: str | None, prediction: str | None, spec: PerformanceSpec | None,
            summaries: str) -> DriftReport:
    features = [c for c in columns.values() if c["role"] == "feature"]
    share = sum(c["drift"] for c in features) / max(1, len(features))
    performance = _performance(ref.scores, cur.scores, spec)
    has_drop = performance is not None and performance.get("drop") is not None
    if measure == "performance" and not has_drop:
        raise ValueError("measure 'performance' needs target and prediction on both sides")
    label, value = "share of drifted features", share
    if measure != "share" and has_drop and performance is not None:
        label, value = "performance drop", max(0.0, float(performance["drop"]))
    warnings = []
    smallest = min(ref.rows, cur.rows)
    if smallest < 100:
        warnings.append(f"small sample ({smallest} rows): only large changes can be detected")
    if any(schema.values()):
        warnings.append("schema changed: see 'schema'; common columns were still compared")
    untested = [n for n, c in columns.items()
                if any(w.startswith("not tested") for w in c["warnings"])]
    action = policy.action(value)
    if untested:
        warnings.append(f"not tested: {', '.join(untested)} (each column's warnings say why)")
        if any(columns[n]["role"] == "feature" for n in untested) and \
                ACTIONS.index(action) < ACTIONS.index("warn"):
            action = "warn"  # a feature nobody could check is never "no drift"
    return DriftReport(columns, schema, share, columns.get(prediction or ""),
                       columns.get(target or ""), performance, action, label,
                       value, method, policy, ref.rows, cur.rows, warnings, summaries)


def _performance(ref: Scores | None, cur: Scores | None,
                 spec: PerformanceSpec | None) -> dict[str, Any] | None:
    if spec is None or cur is None or cur["n"] == 0:
        return None
    regression = spec["regression"]

    def score(sums: Scores) -> float:
        if regression:
            return float(np.sqrt(sums["squared_error"] / sums["n"]))
        return sums["correct"] / sums["n"]

    metric = "rmse" if regression else "accuracy"
    result: dict[str, Any] = {"metric": metric, "current": score(cur), "reference": None,
                              "drop": None}
    if ref is not None and ref["n"]:
        base = score(ref)
        drop = (result["current"] - base) / (abs(base) or 1.0) if regression else base - result[
            "current"]
        result.update(reference=base, drop=float(drop))
    return result
