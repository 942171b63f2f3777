"""What one tick should do, from plain facts (pure: no clock, no files).

Drift is acted on by tier (the monitor's action): ``retrain`` retrains, ``experiment`` runs
the experiment pipeline (a search over models and hyperparameters), ``none`` and ``warn``
do nothing. Without drift to act on, a champion whose accuracy on labelled live traffic
fell ``accuracy_drop`` below its evaluation's (on at least ``accuracy_rows`` rows), a
champion older than ``max_model_age`` or a last
retrain longer ago than ``schedule`` retrains. Limits then apply to any action: no retrain
within ``cooldown`` of the last one, at most ``max_per_day`` in any 24 hours, and in
``dry_run`` nothing runs. A retrain whose tick was killed before it ended (SIGKILL, out of
memory) produced nothing: it counts toward ``max_per_day`` only (a retrain that keeps
killing its tick is tried at most that often a day), never toward ``cooldown`` or
``schedule``, so the next tick retries it when its trigger still holds. While a
challenger is on trial (or was promoted by it in this cycle) no retrain starts; a blocked
decision is recorded with its reason.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from .config import LoopConfig

Action = Literal["none", "retrain", "experiment"]
Cause = Literal["drift", "performance", "age", "schedule", "none"]
DAY = 86400.0


class PerformanceFacts(TypedDict):
    accuracy: float | None  # the champion's on labelled live traffic (None: not measured)
    expected_accuracy: float | None  # what its evaluation measured
    labelled_rows: int  # the rows ``accuracy`` is from


class Facts(PerformanceFacts):
    now: float  # epoch seconds
    new_rows: int  # logged rows since the last tick's window
    drift_action: str | None  # the monitor run's action (None: no monitor run)
    drift_share: float | None
    model_age_s: float | None  # how long the champion has been champion (None: unknown)
    retrains: list[float]  # when earlier cycles' retrains started (epoch seconds)
    interrupted: list[float]  # ... those whose cycle was killed before it ended
    trial: str | None  # why a challenger's trial holds retrains back (None: it does not)


class Decision(TypedDict):
    action: Action
    cause: Cause
    reason: str
    blocked: str | None  # why it is not carried out (cooldown, daily limit, dry run)


def decide(cfg: LoopConfig, facts: Facts) -> Decision:
    action, cause, reason = _wanted(cfg, facts)
    blocked = _blocked(cfg, facts) if action != "none" else None
    return {"action": action, "cause": cause, "reason": reason, "blocked": blocked}


def _wanted(cfg: LoopConfig, facts: Facts) -> tuple[Action, Cause, str]:
    share = facts["drift_share"]
    shown = f"{share:.1%} of features drifted" if share is not None else "drift measured"
    if cfg.drift and facts["drift_action"] == "experiment":
        return "experiment", "drift", f"{shown}: large drift, back to experimentation"
    if cfg.drift and facts["drift_action"] == "retrain":
        return "retrain", "drift", f"{shown}: moderate drift"
    live, expected = facts["accuracy"], facts["expected_accuracy"]
    if (cfg.accuracy_drop is not None and live is not None and expected is not None
            and facts["labelled_rows"] >= cfg.accuracy_rows
            and expected - live >= cfg.accuracy_drop):
        return "retrain", "performance", (
            f"accuracy {live:.3f} on {facts['labelled_rows']} labelled rows of traffic, "
            f"{expected - live:.3f} below the {expected:.3f} of its evaluation (max drop "
            f"{cfg.accuracy_drop:g})")
    age = facts["model_age_s"]
    if cfg.max_model_age_s is not None and age is not None and age > cfg.max_model_age_s:
        return "retrain", "age", (f"the champion is {_span(age)} old (max "
                                  f"{_span(cfg.max_model_age_s)})")
    last = max(facts["retrains"], default=None)
    if cfg.schedule_s is not None and (last is None or facts["now"] - last >= cfg.schedule_s):
        since = ("never retrained" if last is None
                 else f"last retrain {_span(facts['now'] - last)} ago")
        return "retrain", "schedule", f"{since} (every {_span(cfg.schedule_s)})"
    if facts["drift_action"] is None:
        return "none", "none", (f"waiting for data: {facts['new_rows']} new rows, the monitor "
                                f"runs from {cfg.min_new_rows}")
    return "none", "none", f"{shown}: action {facts['drift_action']}, nothing to do"


def _blocked(cfg: LoopConfig, facts: Facts) -> str | None:
    if facts["trial"]:  # one challenger at a time: its test decides before a new retrain
        return facts["trial"]
    now, retrains = facts["now"], facts["retrains"]
    last = max(retrains, default=None)
    if last is not None and now - last < cfg.cooldown_s:
        return (f"cooldown: the last retrain started {_span(now - last)} ago (cooldown "
                f"{_span(cfg.cooldown_s)})")
    recent = sum(1 for t in retrains if now - t < DAY)
    killed = sum(1 for t in facts["interrupted"] if now - t < DAY)
    if recent + killed >= cfg.max_per_day:
        also = f", {killed} of them killed before they ended" if killed else ""
        return (f"daily limit: {recent + killed} retrains in the last 24 h (max "
                f"{cfg.max_per_day}{also})")
    if cfg.dry_run:
        return "dry run: decided, nothing run"
    return None


def _span(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
