"""Drift between a reference and a current dataset, as plain data (first version).

Per column: numeric columns get a two-sample Kolmogorov-Smirnov test with the Wasserstein
distance divided by the reference standard deviation as effect size; categorical columns
get a chi-square test (levels rarer than 1 % pooled into ``__rare__``) with the
Jensen-Shannon distance (base 2) as effect size. p-values are adjusted across columns
with Benjamini-Hochberg. A column drifts when the adjusted p-value is below ``alpha``
*and* the effect size exceeds its threshold, so a tiny shift on a huge sample is reported
but does not alarm. Missing shares, unseen and vanished levels and schema changes are
reported separately. The policy maps the share of drifted features (or the performance
drop when labels exist) to an action.

The drift-monitoring issue extends this module (PSI, timestamps, text, widgets, speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA = "nbops.drift/1"


@dataclass
class Policy:
    """Tiers over the measured share: below ``none_below`` nothing; within the retrain band
    retrain; above ``experiment_above`` back to experimentation; anything between warns."""

    none_below: float = 0.02
    retrain_from: float = 0.05
    retrain_to: float = 0.08
    experiment_above: float = 0.10

    def action(self, value: float) -> str:
        if value < self.none_below:
            return "none"
        if self.retrain_from <= value <= self.retrain_to:
            return "retrain"
        if value > self.experiment_above:
            return "experiment"
        return "warn"


@dataclass
class DriftReport:
    """The outcome of :func:`compare`; ``to_dict()`` is its JSON form."""

    columns: dict[str, dict[str, Any]]
    schema: dict[str, list[str]]
    share_drifted: float
    prediction_drift: dict[str, Any] | None
    performance: dict[str, Any] | None
    action: str
    measure: str
    multiplicity: str = "benjamini-hochberg"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA, "columns": self.columns, "schema": self.schema,
                "share_drifted": self.share_drifted, "prediction_drift": self.prediction_drift,
                "performance": self.performance, "action": self.action, "measure": self.measure,
                "multiplicity": self.multiplicity, "warnings": self.warnings}

    def to_html(self) -> str:
        """Static HTML: no JavaScript, no network."""
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(name)}</td><td>{c['kind']}</td><td>{c['test']}</td>"
            f"<td>{_fmt(c['p_value'])}</td><td>{_fmt(c['effect_size'])}</td>"
            f"<td>{_fmt(c['missing']['current'] - c['missing']['reference'])}</td>"
            f"<td>{'DRIFT' if c['drift'] else ''}</td></tr>" for name, c in self.columns.items())
        return ("<html><head><meta charset='utf-8'><title>nbops drift report</title></head><body>"
                f"<h1>Drift: action {escape(self.action)}</h1>"
                f"<p>{self.share_drifted:.1%} of features drifted ({escape(self.measure)}); "
                f"multiplicity: {self.multiplicity}</p><table border='1'><tr><th>column</th>"
                "<th>kind</th><th>test</th><th>p (adj.)</th><th>effect</th>"
                f"<th>missing change</th><th>drift</th></tr>{rows}</table></body></html>")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _kind(series: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numeric"


def _numeric(ref: Any, cur: Any) -> tuple[float, float, float]:
    from scipy import stats

    a, b = ref.dropna().to_numpy(float), cur.dropna().to_numpy(float)
    if len(a) == 0 or len(b) == 0:
        return 0.0, 1.0, 0.0
    ks = stats.ks_2samp(a, b)
    scale = float(np.std(a)) or float(np.mean(np.abs(a))) or 1.0
    return float(ks.statistic), float(ks.pvalue), float(stats.wasserstein_distance(a, b) / scale)


def _categorical(ref: Any, cur: Any) -> tuple[float, float, float]:
    from scipy import stats
    from scipy.spatial.distance import jensenshannon

    r, c = ref.dropna().astype(str).value_counts(), cur.dropna().astype(str).value_counts()
    levels = sorted(set(r.index) | set(c.index))
    rv, cv = r.reindex(levels, fill_value=0), c.reindex(levels, fill_value=0)
    shares = (rv + cv) / max(1, int(rv.sum() + cv.sum()))
    rare = shares < 0.01
    if rare.any():
        rv, cv = _pool(rv, cv, rare)
    if len(rv) < 2 or rv.sum() == 0 or cv.sum() == 0:
        return 0.0, 1.0, 0.0
    table = np.vstack([rv.to_numpy(), cv.to_numpy()])
    table = table[:, table.sum(axis=0) > 0]
    chi2, p, _, _ = stats.chi2_contingency(table)
    js = float(jensenshannon(rv / rv.sum(), cv / cv.sum(), base=2))
    return float(chi2), float(p), js


def _pool(rv: Any, cv: Any, rare: Any) -> tuple[Any, Any]:
    import pandas as pd

    keep = ~rare
    pooled_r = pd.concat([rv[keep], pd.Series({"__rare__": rv[rare].sum()})])
    pooled_c = pd.concat([cv[keep], pd.Series({"__rare__": cv[rare].sum()})])
    return pooled_r, pooled_c


def _bh(pvalues: list[float]) -> list[float]:
    if not pvalues:
        return []
    p = np.asarray(pvalues)
    order = np.argsort(p)
    ranked = p[order] * len(p) / (np.arange(len(p)) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return [float(v) for v in out]


def compare(reference: Any, current: Any, *, target: str | None = None,
            prediction: str | None = None, alpha: float = 0.05,
            effect_thresholds: dict[str, float] | None = None,
            policy: Policy | None = None, measure: str = "auto") -> DriftReport:
    """Compare two DataFrames column by column and decide an action.

    ``measure`` picks what the policy tiers apply to: ``share`` (of drifted features),
    ``performance`` (accuracy drop, needs labels and predictions on both sides) or
    ``auto`` (performance when available, else share).
    """
    if measure not in ("auto", "share", "performance"):
        raise ValueError(f"unknown drift measure {measure!r}: use auto, share or performance")
    thresholds = {"numeric": 0.1, "categorical": 0.1, **(effect_thresholds or {})}
    common = [c for c in reference.columns if c in current.columns]
    schema = {"added": [c for c in current.columns if c not in reference.columns],
              "removed": [c for c in reference.columns if c not in current.columns],
              "type_changed": [c for c in common if _kind(reference[c]) != _kind(current[c])]}
    columns: dict[str, dict[str, Any]] = {}
    raw_p: list[float] = []
    for name in common:
        columns[name] = _column(reference[name], current[name], name, target, prediction)
        raw_p.append(columns[name]["p_value"])
    for name, adjusted in zip(common, _bh(raw_p), strict=True):
        col = columns[name]
        col["p_value"] = adjusted
        col["drift"] = bool(adjusted < alpha and col["effect_size"] > thresholds[col["kind"]])
    features = [c for c in common if columns[c]["role"] == "feature"]
    share = sum(columns[c]["drift"] for c in features) / max(1, len(features))
    performance = _performance(reference, current, target, prediction)
    has_drop = performance is not None and performance.get("drop") is not None
    if measure == "performance" and not has_drop:
        raise ValueError("measure 'performance' needs labels and predictions on both sides")
    label, value = "share of drifted features", share
    if measure != "share" and has_drop and performance is not None:
        label, value = "performance drop", max(0.0, performance["drop"])
    warnings = [f"small sample ({min(len(reference), len(current))} rows): tests have little "
                "power"] if min(len(reference), len(current)) < 100 else []
    pred = columns.get(prediction) if prediction else None
    return DriftReport(columns, schema, share, pred, performance,
                       (policy or Policy()).action(value), label, warnings=warnings)


def _column(ref: Any, cur: Any, name: str, target: str | None,
            prediction: str | None) -> dict[str, Any]:
    kind = _kind(ref)
    role = "target" if name == target else "prediction" if name == prediction else "feature"
    stat, p, effect = (_numeric if kind == "numeric" else _categorical)(ref, cur)
    missing = {"reference": float(ref.isna().mean()), "current": float(cur.isna().mean())}
    missing["drift"] = bool(abs(missing["current"] - missing["reference"]) > 0.05)
    ref_levels = set(ref.dropna().astype(str)) if kind == "categorical" else set()
    cur_levels = set(cur.dropna().astype(str)) if kind == "categorical" else set()
    cur_shares = cur.dropna().astype(str).value_counts(normalize=True) if cur_levels else {}
    return {"kind": kind, "role": role, "test": "ks" if kind == "numeric" else "chi2",
            "statistic": stat, "p_value": p, "effect_size": effect, "drift": False,
            "missing": missing,
            "unseen_levels": {lv: float(cur_shares[lv]) for lv in sorted(cur_levels - ref_levels)},
            "vanished_levels": sorted(ref_levels - cur_levels), "warnings": []}


def _performance(reference: Any, current: Any, target: str | None,
                 prediction: str | None) -> dict[str, Any] | None:
    if not target or not prediction or target not in current or prediction not in current:
        return None
    current_acc = float((current[target] == current[prediction]).mean())
    result: dict[str, Any] = {"metric": "accuracy", "current": current_acc, "reference": None,
                              "drop": None}
    if prediction in reference and target in reference:
        ref_acc = float((reference[target] == reference[prediction]).mean())
        result.update(reference=ref_acc, drop=ref_acc - current_acc)
    return result
