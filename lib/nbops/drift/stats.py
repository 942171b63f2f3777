"""Two-sample statistics, computed from sorted arrays so each column is sorted once, or
from two quantile sketches (``numeric_sketch``) when the data was streamed.

Numeric: Kolmogorov-Smirnov (statistic and asymptotic p-value), Wasserstein-1 distance,
and the population stability index over reference deciles. Categorical: chi-square with
rare levels pooled, Jensen-Shannon distance (base 2) and PSI over levels.

From sketches the CDFs are read on a grid of both sketches' quantiles (``SKETCH_GRID``
ranks each): each CDF value is off by at most the sketch's rank error ``e`` (see
``summary.rank_error``), so the KS distance is off by at most ``2e``. The p-value is taken
at ``max(0, D - 2e)`` (conservative: sketch noise alone never makes a column significant);
Wasserstein integrates the part of the same CDF gap beyond ``2e`` (so noise along a long
tail adds nothing); PSI uses the reference sketch's deciles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .summary import Numbers, load_sketch, rank_error

_EPS = 1e-4
SKETCH_GRID = 2001  # ranks read from each sketch for the CDF grid


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    effect_size: float  # max(normalised Wasserstein, KS) (numeric) or Jensen-Shannon
    psi: float
    histogram: dict[str, Any] = field(default_factory=dict)  # small summary for plots


NO_TEST = TestResult("none", 0.0, 1.0, 0.0, 0.0)


def guarded_scale(ref_sorted: np.ndarray, cur_sorted: np.ndarray | None = None) -> float:
    """Spread for normalising distances: the reference's std; when the reference is
    constant, the pooled std of both sides (so a constant column that starts to vary is
    measured against the variation that appeared); then the IQR; then mean |x|; then 1."""
    std = float(np.std(ref_sorted))
    if std > 0:
        return std
    if cur_sorted is not None and len(cur_sorted):
        pooled = float(np.std(np.concatenate([ref_sorted, cur_sorted])))
        if pooled > 0:
            return pooled
    n = len(ref_sorted)
    iqr = float(ref_sorted[(3 * n) // 4] - ref_sorted[n // 4])
    if iqr > 0:
        return iqr
    mean_abs = float(np.mean(np.abs(ref_sorted)))
    return mean_abs if mean_abs > 0 else 1.0


def numeric(ref: np.ndarray, cur: np.ndarray) -> TestResult:
    """KS, normalised Wasserstein and PSI of two samples without missing values."""
    if len(ref) == 0 or len(cur) == 0:
        return NO_TEST
    a, b = np.sort(ref), np.sort(cur)
    # One stable argsort of two sorted runs is a linear merge; the empirical CDFs are
    # running counts of which side each merged value came from.
    merged = np.concatenate([a, b])
    order = np.argsort(merged, kind="stable")
    grid = merged[order]
    from_a = order < len(a)
    cdf_a = np.cumsum(from_a) / len(a)
    cdf_b = np.cumsum(~from_a) / len(b)
    gap = np.abs(cdf_a - cdf_b)
    run_end = np.append(grid[1:] != grid[:-1], True)  # CDFs are read after tied values
    ks = float(gap[run_end].max())
    wasserstein = float(np.sum(gap[:-1] * np.diff(grid)))
    # effect size: Wasserstein over a guarded spread, and never less than the KS distance
    # (a large share of mass moved is never "tiny", whatever the spread)
    effect = max(wasserstein / guarded_scale(a, b), ks)
    return TestResult("ks", ks, _ks_pvalue(ks, len(a), len(b)), effect, _numeric_psi(a, b),
                      _hist(a, b))


def numeric_sketch(ref: Numbers, cur: Numbers) -> TestResult:
    """KS, normalised Wasserstein and PSI from two sides' sketches (see the module doc)."""
    if ref.count == 0 or cur.count == 0:
        return NO_TEST
    a, b = load_sketch(ref), load_sketch(cur)
    ranks = np.linspace(0.0, 1.0, SKETCH_GRID)
    grid = np.unique(np.concatenate([a.get_quantiles(ranks), b.get_quantiles(ranks)]))
    cdf_a = np.asarray(a.get_cdf(grid, inclusive=True))[:-1]
    cdf_b = np.asarray(b.get_cdf(grid, inclusive=True))[:-1]
    gap = np.abs(cdf_a - cdf_b)
    ks = float(gap.max())
    slack = 2 * rank_error()
    # only the gap beyond the sketches' error counts: noise spread over a long tail would
    # otherwise add up to an effect that is not there
    wasserstein = float(np.sum(np.maximum(gap[:-1] - slack, 0.0) * np.diff(grid)))
    effect = max(wasserstein / _moment_scale(ref, cur), ks)
    p_value = _ks_pvalue(max(0.0, ks - slack), ref.count, cur.count)
    edges = np.unique(a.get_quantiles(np.linspace(0, 1, 11)[1:-1]))
    shares_a = np.diff(np.asarray(a.get_cdf(edges, inclusive=True)), prepend=0.0)
    shares_b = np.diff(np.asarray(b.get_cdf(edges, inclusive=True)), prepend=0.0)
    low, high = min(ref.low, cur.low), max(ref.high, cur.high)
    hist_edges = np.linspace(low, high if high > low else low + 1.0, 21)
    hist = {"type": "hist", "edges": [float(e) for e in hist_edges],
            "reference": _sketch_shares(a, hist_edges), "current": _sketch_shares(b, hist_edges)}
    return TestResult("ks", ks, p_value, effect, psi(shares_a, shares_b), hist)


def _sketch_shares(sketch: Any, edges: np.ndarray) -> list[float]:
    cdf = np.asarray(sketch.get_cdf(edges[1:-1], inclusive=True))
    return [float(v) for v in np.diff(cdf, prepend=0.0)]


def _moment_scale(ref: Numbers, cur: Numbers) -> float:
    """``guarded_scale`` from exact moments: the reference's std, else the pooled std."""
    if ref.std > 0:
        return ref.std
    count = ref.count + cur.count
    delta = cur.mean - ref.mean
    pooled = (ref.m2 + cur.m2 + delta * delta * ref.count * cur.count / count) / count
    return float(np.sqrt(pooled)) if pooled > 0 else 1.0


def _hist(a_sorted: np.ndarray, b_sorted: np.ndarray, bins: int = 20) -> dict[str, Any]:
    low = float(min(a_sorted[0], b_sorted[0]))
    high = float(max(a_sorted[-1], b_sorted[-1]))
    # halved, then doubled (exact): the span of values near the float limit overflows
    edges = 2.0 * np.linspace(low / 2, (high if high > low else low + 1.0) / 2, bins + 1)

    def shares(x: np.ndarray) -> list[float]:
        counts = np.diff(np.searchsorted(x, edges, side="left"))
        counts[-1] += int(np.sum(x == edges[-1]))  # the last bin is closed on the right
        return [float(v) for v in counts / len(x)]

    return {"type": "hist", "edges": [float(e) for e in edges], "reference": shares(a_sorted),
            "current": shares(b_sorted)}


def _ks_pvalue(d: float, n: int, m: int) -> float:
    from scipy.stats import kstwo

    if d == 0:
        return 1.0
    en = n * m / (n + m)
    return float(np.clip(kstwo.sf(d, max(1, round(en))), 0.0, 1.0))


def _numeric_psi(a_sorted: np.ndarray, b_sorted: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(a_sorted[np.linspace(0, len(a_sorted) - 1, bins + 1).astype(int)[1:-1]])
    ref = np.diff(np.searchsorted(a_sorted, edges, side="right"), prepend=0, append=len(a_sorted))
    cur = np.diff(np.searchsorted(b_sorted, edges, side="right"), prepend=0, append=len(b_sorted))
    return psi(ref / len(a_sorted), cur / len(b_sorted))


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    p, q = np.maximum(ref_share, _EPS), np.maximum(cur_share, _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> TestResult:
    """Chi-square (levels with expected count < 5 pooled), JS distance and PSI."""
    from scipy import stats

    levels = sorted(lv for lv in set(ref_counts) | set(cur_counts)
                    if ref_counts.get(lv, 0) or cur_counts.get(lv, 0))  # never two zeros
    r = np.array([ref_counts.get(lv, 0) for lv in levels], dtype=float)
    c = np.array([cur_counts.get(lv, 0) for lv in levels], dtype=float)
    if r.sum() == 0 or c.sum() == 0:
        return NO_TEST
    js = _jensen_shannon(r / r.sum(), c / c.sum())
    index = psi(r / r.sum(), c / c.sum())
    top = np.argsort(-(r / r.sum() + c / c.sum()), kind="stable")[:15]
    hist = {"type": "bar", "labels": [levels[i] for i in top],
            "reference": [float(r[i] / r.sum()) for i in top],
            "current": [float(c[i] / c.sum()) for i in top]}
    pooled_r, pooled_c = _pool_rare(r, c)
    if len(pooled_r) < 2:
        return TestResult("chi2", 0.0, 1.0, js, index, hist)
    chi2, p, _, _ = stats.chi2_contingency(np.vstack([pooled_r, pooled_c]))
    return TestResult("chi2", float(chi2), float(p), js, index, hist)


def _pool_rare(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = r + c
    expected_min = np.minimum(total * r.sum() / total.sum(), total * c.sum() / total.sum())
    rare = expected_min < 5
    if not rare.any():
        return r, c
    return (np.append(r[~rare], r[rare].sum()), np.append(c[~rare], c[rare].sum()))


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(np.sqrt(max(0.0, (kl(p) + kl(q)) / 2)))


def two_proportion_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided z-test for a change in a share (missing values)."""
    from scipy.stats import norm

    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * norm.sf(abs(k1 / n1 - k2 / n2) / se))


def adjust(pvalues: list[float], method: str) -> list[float]:
    """Benjamini-Hochberg (``bh``) or Bonferroni adjusted p-values."""
    if not pvalues:
        return []
    p = np.asarray(pvalues, dtype=float)
    if method == "bonferroni":
        return [float(v) for v in np.minimum(p * len(p), 1.0)]
    order = np.argsort(p)
    ranked = p[order] * len(p) / (np.arange(len(p)) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return [float(v) for v in out]
