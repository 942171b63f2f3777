"""Which trial won: the pure rule, kept apart from the driver so it is tested alone.

Only trials that succeeded (or were served from the cache) with a finite metric value
compete; failed, killed and pruned trials never win, NaN never wins. Ties go to the
lowest trial number (the earliest asked), so the winner does not depend on which of
several parallel trials finished first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..records.types import Direction, TrialEntry

WINNING = ("succeeded", "cached")


def best_trial(trials: Iterable[TrialEntry], direction: Direction | None) -> TrialEntry | None:
    """The best trial for ``direction``; None without a direction or a candidate."""
    if direction is None:
        return None
    candidates = [t for t in trials if t["status"] in WINNING and t["run_id"]
                  and t["value"] is not None and math.isfinite(t["value"])]
    if not candidates:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(candidates, key=lambda t: (sign * float(t["value"] or 0.0), t["number"]))


def ranked(trials: Iterable[TrialEntry], direction: Direction | None) -> list[TrialEntry]:
    """Trials best first: those that compete (finite values by direction), then the others
    with a finite value (a pruned trial's last value), then the rest by number; the winner
    is always first."""
    items = list(trials)
    if direction is None:
        return sorted(items, key=lambda t: t["number"])
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: TrialEntry) -> tuple[int, float, int]:
        value = t["value"]
        if value is None or not math.isfinite(value):
            return (2, 0.0, t["number"])
        return (0 if t["status"] in WINNING else 1, sign * value, t["number"])

    return sorted(items, key=key)
