"""How the next trial is chosen: grid, random, or Optuna (ask and tell).

A strategy hands out trials (``ask``), hears intermediate values of running trials
(``report``, which answers whether to prune) and final outcomes (``tell``). Grid and random
trials are fixed in advance (random from a seeded generator: the same seed gives the same
parameters). Optuna runs in memory in this process, the only writer of its study; its
sampler is seeded with ``--seed``. Optuna's MLflow callback is never used (it drives
MLflow's global active run): trials are mirrored by nbops like any run.

Pruning (Optuna): Optuna's ``MedianPruner`` with its own defaults (no pruning before 5
trials have completed, none in a warm-up). ``report`` gets only intermediate values (the
caller never passes a trial's newest value, which may be its final one); ``tell`` first
hands Optuna the trial's whole logged curve (steps not reported yet, no pruning question
asked), so completed trials are the reference later trials are compared with at each
step, and a pruned trial is told ``PRUNED`` with its last intermediate value as its value
(TPE learns from pruned trials by that value and how far they got).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .space import Choice, expand_grid, sample
from .spec import SweepSpec

if TYPE_CHECKING:
    import optuna

Outcome = Literal["complete", "pruned", "fail"]
Curve = Sequence[tuple[int, float]]  # (step, value) points of the optimised metric


class Strategy(Protocol):
    """Chooses trials; ``ask`` returns None when there are no more."""

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        """The next trial's number and swept parameters."""

    def report(self, number: int, step: int, value: float) -> bool:
        """An intermediate value of a running trial (never its last); True: prune it now."""

    def tell(self, number: int, outcome: Outcome, value: float | None,
             curve: Curve = ()) -> str | None:
        """How a trial ended, with the curve it logged; returns the state the strategy
        recorded (Optuna's)."""


class FixedStrategy:
    """A list of trials decided in advance (grid, random)."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self._points = points
        self._next = 0

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        if self._next >= len(self._points):
            return None
        self._next += 1
        return self._next - 1, dict(self._points[self._next - 1])

    def report(self, number: int, step: int, value: float) -> bool:
        return False

    def tell(self, number: int, outcome: Outcome, value: float | None,
             curve: Curve = ()) -> str | None:
        return None


def random_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """``spec.trials`` points drawn with ``random.Random(seed)`` (reproducible)."""
    rng = random.Random(spec.seed)
    return [sample(spec.space, rng) for _ in range(spec.trials)]


class OptunaStrategy:
    """Optuna's ask-and-tell interface on an in-memory study of this process."""

    def __init__(self, spec: SweepSpec) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        assert spec.direction is not None
        self.spec = spec
        pruner = (optuna.pruners.MedianPruner() if spec.prune  # Optuna's own defaults
                  else optuna.pruners.NopPruner())
        self.study = optuna.create_study(
            direction=spec.direction, sampler=optuna.samplers.TPESampler(seed=spec.seed),
            pruner=pruner)
        self._trials: dict[int, optuna.trial.Trial] = {}
        self._steps: dict[int, int] = {}
        self._asked = 0

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        if self._asked >= self.spec.trials:
            return None
        trial = self.study.ask()
        self._asked += 1
        point: dict[str, Any] = {}
        for name, dim in self.spec.space.items():
            if isinstance(dim, Choice):
                point[name] = trial.suggest_categorical(name, list(dim.values))
            elif dim.integer:
                point[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
            else:
                point[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        self._trials[trial.number] = trial
        return trial.number, point

    def report(self, number: int, step: int, value: float) -> bool:
        trial = self._trials[number]
        if step <= self._steps.get(number, -1) or not math.isfinite(value):
            return False  # Optuna takes each step once
        self._steps[number] = step
        trial.report(value, step)
        return bool(trial.should_prune())

    def tell(self, number: int, outcome: Outcome, value: float | None,
             curve: Curve = ()) -> str | None:
        from optuna.trial import TrialState

        trial = self._trials[number]
        for step, point in sorted(curve):  # the reference for later trials' steps
            if step > self._steps.get(number, -1) and math.isfinite(point):
                self._steps[number] = step
                trial.report(point, step)
        if outcome == "complete" and value is not None and math.isfinite(value):
            frozen = self.study.tell(trial, value)
        elif outcome == "pruned":
            frozen = self.study.tell(trial, state=TrialState.PRUNED)
        else:
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        return str(frozen.state.name)


def make_strategy(spec: SweepSpec) -> Strategy:
    """The strategy ``spec`` asks for."""
    if spec.strategy == "optuna":
        return OptunaStrategy(spec)
    if spec.strategy == "random":
        return FixedStrategy(random_points(spec))
    return FixedStrategy(expand_grid(spec.space))
