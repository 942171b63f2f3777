"""Pruning the trials of an Optuna sweep on their intermediate values.

Invariants:

- a trial is pruned only on intermediate values: the watcher (``watch``) hands out a value
  only once the trial has logged the metric at a later step, so a trial's newest value,
  which may be its final one (a metric logged once, at the end of the work), never prunes
  it; nor does any value once the trial has ended (its future is done);
- a trial asked to stop that succeeded anyway (the stop came too late) is a completed
  trial, not a pruned one;
- a pruned trial's run record keeps ``status: killed`` (its notebook did not run to the
  end) and gets the tags ``nbops.trial_state=pruned`` and ``nbops.pruned_at_step`` before
  it is mirrored; trackers read the tag (MLflow: a FINISHED run, as Optuna's own MLflow
  callback records pruned trials, not a red KILLED one).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..tracking.mlflow import TRIAL_STATE_TAG
from .watch import StepWatcher

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..records.store import RunStore
    from ..records.types import RunRecord
    from .strategies import Curve, Strategy


class Pruning:
    """Follows the running trials of one sweep and decides which to stop."""

    def __init__(self, runs_dir: Path, sweep_id: str, metric: str, strategy: Strategy) -> None:
        self.watcher = StepWatcher(runs_dir, sweep_id, metric)
        self.strategy = strategy
        self.at: dict[int, int] = {}  # trial -> the step it was pruned at

    def check(self, running: dict[int, Future[RunRecord]]) -> list[tuple[int, int, float]]:
        """Report the new intermediate values of running trials to the strategy; returns
        the trials to stop now, as (trial, step, value)."""
        stop = []
        for number, future in running.items():
            if number in self.at:
                continue
            for step, value in sorted(self.watcher.new_points(number)):
                if self.strategy.report(number, step, value) and not future.done():
                    self.at[number] = step
                    stop.append((number, step, value))
                    break
        return stop

    def pruned_at(self, number: int, record: RunRecord) -> int | None:
        """The step a trial that ended with ``record`` was pruned at (None: not pruned)."""
        self.watcher.forget(number)
        if record["status"] == "succeeded":
            return None
        return self.at.get(number)


def curve(record: RunRecord, metric: str | None) -> Curve:
    """The (step, value) points a run logged of ``metric``, in the order it logged them."""
    points = record["metric_history"].get(metric or "", [])
    return [(int(p["step"]), float(p["value"])) for p in points]


def tag_pruned(store: RunStore, run_id: str, step: int) -> None:
    """Say in a trial's run record that its sweep pruned it at ``step``."""
    record = store.read(run_id)
    record["tags"].update({TRIAL_STATE_TAG: "pruned", "nbops.pruned_at_step": str(step)})
    store.write(record)
