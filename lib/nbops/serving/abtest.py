"""Champion against challenger on live traffic: join predictions with late labels, decide.

Modes:

- ``paired`` (shadow traffic: both models answered the same rows). Classification:
  McNemar's exact test on the rows where exactly one model is right; regression: a paired
  bootstrap (2,000 resamples, seeded) of the difference in squared error.
- ``split`` (each row answered by one model). Classification: a two-proportion z-test on
  accuracy; regression: Welch's t-test on squared errors. With the sample size each
  variant would need for 80 % power to detect the observed difference (or the margin,
  whichever is larger), so "inconclusive" says how much more traffic it takes.

Decision, in order: **win** when the challenger is better with p < alpha and both
guardrails hold; **equivalent** when the (1 - 2 alpha) confidence interval of the metric
difference lies within ±margin (TOST) and both guardrails hold; otherwise
**inconclusive**, with the reason (worse, too little data, a guardrail failed). Guardrails
are non-inferiority checks: the challenger's p95 latency at most ``1 + latency_margin``
times the champion's plus ``latency_slack_ms`` (a few milliseconds either way are noise,
and a shadow answers off the response path on a thread that shares the server's cores),
and its error rate at most the champion's plus ``error_margin``.
The metric is accuracy (higher is better) or RMSE (lower is better); ``margin`` is in
accuracy points for classification and a share of the champion's RMSE for regression.

Which versions (:func:`choose_versions`): a test compares two different versions, the one
that answered as ``champion`` and the one that answered as the challenger side (``shadow``
when the window has shadow rows, else ``challenger``). Unless both are given, they are
taken from the versions that served the window on those two sides: exactly two, and one
way only to pair them; anything else (one version, three, a version compared with itself)
is a ParameterError naming the versions seen and the parameters to pass.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

import numpy as np

from ..errors import ParameterError

Decision = Literal["win", "equivalent", "inconclusive"]
Mode = Literal["paired", "split"]


class Guardrail(TypedDict):
    champion: float
    challenger: float
    limit: float
    ok: bool


class ABResult(TypedDict):
    decision: Decision
    reason: str
    mode: Mode
    task: Literal["classification", "regression"]
    test: str
    p_value: float
    metric: str
    champion: float
    challenger: float
    difference: float  # challenger minus champion, in "better" direction (> 0: better)
    ci: list[float]  # (1 - 2 alpha) interval of the difference
    n: dict[str, int]
    required_n: int | None  # per variant, split mode
    guardrails: dict[str, Guardrail]


class Sides(TypedDict):
    """The two versions under test and how they were chosen."""

    champion: int
    challenger: int
    variant: Literal["shadow", "challenger"]  # the side the challenger answered as
    served: dict[int, list[str]]  # every version on either side in the window: its sides
    chosen: Literal["parameters", "log"]  # both versions given, or (some) read from the log


def choose_versions(logged: Any, champion_version: int = 0,
                    challenger_version: int = 0) -> Sides:
    """The champion and challenger versions of a test on ``logged`` (``read_log`` rows); a
    version given (not 0) is kept, one left at 0 comes from the log (see the module doc).

    Raises:
        ParameterError: both sides are the same version, a given version did not serve on
            its side, or the log does not name exactly one pair of two versions.
    """
    variant: Literal["shadow", "challenger"] = (
        "shadow" if "shadow" in set(logged["_variant"]) else "challenger")
    sides = logged[logged["_variant"].isin(["champion", variant])
                   & logged["_version"].notna()]
    served: dict[int, list[str]] = {}
    for version, side in sorted({(int(v), str(s)) for v, s in
                                 zip(sides["_version"], sides["_variant"], strict=True)}):
        served.setdefault(version, []).append(side)
    seen = "; versions that served the window: " + (", ".join(
        f"v{v} ({', '.join(s)})" for v, s in served.items()) or "none")
    fix = (" Pass -p champion_version N -p challenger_version M (two versions that served"
           f"{_latest_pair(sides, variant)}), or a -p window in which two served.")
    if champion_version and champion_version == challenger_version:
        raise ParameterError(f"both sides are v{champion_version}: a version compared with "
                             f"itself proves nothing{seen}.{fix}", name="challenger_version")
    if not champion_version and not challenger_version and len(served) != 2:
        raise ParameterError(
            f"{'only one version' if len(served) == 1 else f'{len(served)} versions'} "
            f"served the window on the champion and {variant} sides, an A/B test compares "
            f"two{seen}.{fix}", name="champion_version")
    for name, given, side in (("champion_version", champion_version, "champion"),
                              ("challenger_version", challenger_version, variant)):
        if given and side not in served.get(given, []):
            raise ParameterError(f"-p {name} {given}: v{given} did not answer as {side} in "
                                 f"the window{seen}.{fix}", name=name)
    pairs = [(c, d) for c, cs in served.items() for d, ds in served.items()
             if c != d and "champion" in cs and variant in ds
             and champion_version in (0, c) and challenger_version in (0, d)]
    if len(pairs) != 1:
        problem = ("they pair up more than one way" if pairs else
                   f"no two different versions answered as champion and {variant}")
        raise ParameterError(f"cannot tell which versions to compare: {problem}{seen}.{fix}",
                             name="champion_version")
    (champion, challenger), = pairs
    return {"champion": champion, "challenger": challenger, "variant": variant,
            "served": served,
            "chosen": "parameters" if champion_version and challenger_version else "log"}


def _latest_pair(sides: Any, variant: str) -> str:
    """``"; the latest pair: -p champion_version A -p challenger_version B"`` when the
    newest rows of the two sides name two different versions, else ``""``."""
    import pandas as pd

    at = pd.to_datetime(sides["_time"], utc=True, format="ISO8601")
    latest = sides.assign(_at=at).sort_values("_at").groupby("_variant")["_version"].last()
    if "champion" not in latest or variant not in latest:
        return ""
    a, b = int(latest["champion"]), int(latest[variant])
    return (f"; the pair serving last: -p champion_version {a} -p challenger_version {b}"
            if a != b else "")


def only_sides(frame: Any, sides: Sides) -> Any:
    """The rows of ``frame`` (logged, joined or failed rows) that the two versions under
    test answered on their sides: the champion's as ``champion``, the challenger's as
    ``sides["variant"]``."""
    champion = (frame["_variant"] == "champion") & (frame["_version"] == sides["champion"])
    challenger = ((frame["_variant"] == sides["variant"])
                  & (frame["_version"] == sides["challenger"]))
    return frame[champion | challenger]


def join_labels(log: Any, labels: Any, label_column: str) -> Any:
    """Logged rows with their label (labels keyed by ``request_id`` and ``row``; ``row``
    may be left out when every request had one row)."""
    keys = ["request_id", "row"] if "row" in labels.columns else ["request_id"]
    missing = [k for k in [*keys, label_column] if k not in labels.columns]
    if missing:
        raise ValueError(f"the labels need the column(s) {', '.join(missing)}")
    right = labels[[*keys, label_column]].rename(
        columns={"request_id": "_request_id", "row": "_row", label_column: "_label"})
    return log.merge(right, on=[f"_{k}" for k in keys], how="inner")


def evaluate(joined: Any, failures: Any = None, *, mode: Mode | None = None,
             alpha: float = 0.05, margin: float = 0.01, latency_margin: float = 0.2,
             error_margin: float = 0.01, latency_slack_ms: float = 10.0) -> ABResult:
    """The A/B decision from labelled log rows (``join_labels``) and the failed requests
    (``read_log(..., errors=True)`` rows with ``_error``), see the module doc."""
    variants = set(joined["_variant"])
    challenger_name = "shadow" if "shadow" in variants else "challenger"
    chosen: Mode = mode or ("paired" if challenger_name == "shadow" else "split")
    if "champion" not in variants or challenger_name not in variants:
        raise ValueError(f"need labelled rows of the champion and a challenger or shadow; "
                         f"found variants: {', '.join(sorted(variants)) or 'none'}")
    labels = joined["_label"]
    regression = bool(np.issubdtype(labels.dtype, np.floating) and labels.nunique() > 20)
    champ = joined[joined["_variant"] == "champion"]
    chall = joined[joined["_variant"] == challenger_name]
    if chosen == "paired":
        stats = _paired(champ, chall, regression, alpha)
    else:
        stats = _split(champ, chall, regression, alpha, margin)
    guardrails = {"latency_p95": _latency(joined, challenger_name, latency_margin,
                                          latency_slack_ms),
                  "error_rate": _errors(joined, failures, challenger_name, error_margin)}
    return _decide(stats, guardrails, chosen, regression, alpha, margin)


class _Stats(TypedDict):
    test: str
    p_value: float
    champion: float
    challenger: float
    difference: float
    ci: list[float]
    n: dict[str, int]
    required_n: int | None


def _correct(frame: Any) -> Any:
    return (frame["prediction"].astype(str) == frame["_label"].astype(str)).to_numpy(int)


def _squared(frame: Any) -> Any:
    return (frame["prediction"].astype(float) - frame["_label"].astype(float)).to_numpy() ** 2


def _paired(champ: Any, chall: Any, regression: bool, alpha: float) -> _Stats:
    from scipy import stats

    pairs = champ.merge(chall, on=["_request_id", "_row"], suffixes=("_c", "_s"))
    if len(pairs) == 0:
        raise ValueError("no row was answered by both the champion and the shadow")
    n = {"pairs": len(pairs)}
    z = stats.norm.ppf(1 - alpha)
    if not regression:
        c = (pairs["prediction_c"].astype(str) == pairs["_label_c"].astype(str)).to_numpy(int)
        s = (pairs["prediction_s"].astype(str) == pairs["_label_c"].astype(str)).to_numpy(int)
        only_s, only_c = int(((s == 1) & (c == 0)).sum()), int(((s == 0) & (c == 1)).sum())
        p = 1.0 if only_s + only_c == 0 else float(
            stats.binomtest(only_s, only_s + only_c, 0.5).pvalue)
        diff = s - c
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.inf
        mean = float(diff.mean())
        return {"test": "McNemar exact (paired)", "p_value": p, "champion": float(c.mean()),
                "challenger": float(s.mean()), "difference": mean,
                "ci": [mean - z * se, mean + z * se], "n": n, "required_n": None}
    err_c = (pairs["prediction_c"].astype(float) - pairs["_label_c"].astype(float)) ** 2
    err_s = (pairs["prediction_s"].astype(float) - pairs["_label_c"].astype(float)) ** 2
    gain = (err_c - err_s).to_numpy()  # > 0: the challenger's error is smaller
    rng = np.random.default_rng(0)
    means = np.array([gain[rng.integers(0, len(gain), len(gain))].mean() for _ in range(2000)])
    p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    rmse_c, rmse_s = math.sqrt(err_c.mean()), math.sqrt(err_s.mean())
    scale = err_c.mean() or 1.0
    low, high = np.quantile(means, [alpha, 1 - alpha]) / scale
    return {"test": "paired bootstrap of squared error", "p_value": p, "champion": rmse_c,
            "challenger": rmse_s, "difference": float(gain.mean() / scale),
            "ci": [float(low), float(high)], "n": n, "required_n": None}


def _split(champ: Any, chall: Any, regression: bool, alpha: float, margin: float) -> _Stats:
    from scipy import stats

    n = {"champion": len(champ), "challenger": len(chall)}
    z = stats.norm.ppf(1 - alpha)
    power = stats.norm.ppf(0.8)
    if not regression:
        a, b = _correct(champ), _correct(chall)
        p1, p2 = a.mean(), b.mean()
        pooled = (a.sum() + b.sum()) / (len(a) + len(b))
        se0 = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / len(a) + 1 / len(b)))
        p = float(2 * stats.norm.sf(abs(p2 - p1) / se0))
        se = math.sqrt(max(p1 * (1 - p1) / len(a) + p2 * (1 - p2) / len(b), 1e-12))
        effect = max(abs(p2 - p1), margin)
        variance = p1 * (1 - p1) + p2 * (1 - p2) or 0.25
        needed = math.ceil((stats.norm.ppf(1 - alpha / 2) + power) ** 2 * variance / effect**2)
        return {"test": "two-proportion z-test (split)", "p_value": p, "champion": float(p1),
                "challenger": float(p2), "difference": float(p2 - p1),
                "ci": [float(p2 - p1 - z * se), float(p2 - p1 + z * se)], "n": n,
                "required_n": needed}
    ea, eb = _squared(champ), _squared(chall)
    test = stats.ttest_ind(ea, eb, equal_var=False)
    scale = ea.mean() or 1.0
    gain = (ea.mean() - eb.mean()) / scale
    se = math.sqrt(ea.var(ddof=1) / len(ea) + eb.var(ddof=1) / len(eb)) / scale
    effect = max(abs(gain), margin)
    pooled_var = (ea.var(ddof=1) + eb.var(ddof=1)) / scale**2
    needed = math.ceil((stats.norm.ppf(1 - alpha / 2) + power) ** 2 * pooled_var / effect**2)
    return {"test": "Welch t-test on squared error (split)", "p_value": float(test.pvalue),
            "champion": math.sqrt(ea.mean()), "challenger": math.sqrt(eb.mean()),
            "difference": float(gain), "ci": [float(gain - z * se), float(gain + z * se)],
            "n": n, "required_n": needed}


def _latency(joined: Any, challenger: str, margin: float, slack_ms: float) -> Guardrail:
    per_request = joined.drop_duplicates(["_request_id", "_variant"])
    p95 = per_request.groupby("_variant")["_latency_ms"].quantile(0.95)
    champion, chall = float(p95.get("champion", 0.0)), float(p95.get(challenger, 0.0))
    limit = champion * (1 + margin) + slack_ms
    return {"champion": champion, "challenger": chall, "limit": limit, "ok": chall <= limit}


def _errors(joined: Any, failures: Any, challenger: str, margin: float) -> Guardrail:
    ok = joined.drop_duplicates(["_request_id", "_variant"])["_variant"].value_counts()
    bad = (failures["_variant"].value_counts() if failures is not None and len(failures)
           else ok * 0)

    def rate(variant: str) -> float:
        failed = int(bad.get(variant, 0))
        total = failed + int(ok.get(variant, 0))
        return failed / total if total else 0.0

    champion, chall = rate("champion"), rate(challenger)
    limit = champion + margin
    return {"champion": champion, "challenger": chall, "limit": limit, "ok": chall <= limit}


def _decide(stats: _Stats, guardrails: dict[str, Guardrail], mode: Mode, regression: bool,
            alpha: float, margin: float) -> ABResult:
    better = stats["difference"] > 0
    failed = [name for name, g in guardrails.items() if not g["ok"]]
    decision: Decision = "inconclusive"
    if failed:
        reason = f"guardrail failed: {', '.join(failed)}"
    elif better and stats["p_value"] < alpha:
        decision, reason = "win", f"challenger better (p = {stats['p_value']:.3g})"
    elif -margin <= stats["ci"][0] and stats["ci"][1] <= margin:
        decision = "equivalent"
        reason = f"difference within ±{margin:g} ({1 - 2 * alpha:.0%} CI)"
    elif not better and stats["p_value"] < alpha:
        reason = f"challenger worse (p = {stats['p_value']:.3g})"
    else:
        need = stats["required_n"]
        reason = "not enough evidence" + (f": about {need} rows per variant needed"
                                          if need else "")
    return {"decision": decision, "reason": reason, "mode": mode,
            "task": "regression" if regression else "classification", "test": stats["test"],
            "p_value": stats["p_value"], "metric": "rmse" if regression else "accuracy",
            "champion": stats["champion"], "challenger": stats["challenger"],
            "difference": stats["difference"], "ci": stats["ci"], "n": stats["n"],
            "required_n": stats["required_n"], "guardrails": guardrails}
