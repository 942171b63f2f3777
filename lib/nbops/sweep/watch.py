"""Intermediate values of running trials, read from their run folders (Optuna pruning).

A trial's kernel appends ``nbops.log_metric`` events to ``<run>/events.jsonl`` while it
runs. The driver finds the run folder of each running trial (a new folder whose
``run.json`` names this sweep and trial) and follows its events file from where it last
read. Only complete lines are read; a half-written last line waits for the next poll.
Read-only: nothing here writes into a run folder.

Invariant: a value is handed out only once the trial has logged the metric at a *later*
step, so it is an intermediate value. The newest value is held back: it may be the
trial's last (a metric logged once, at the end of the work, is its final value), and a
trial is never pruned on its final value (that value is told to Optuna when the trial
ends, from its run record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..records.store import EVENTS_FILE, RUN_FILE


@dataclass
class _Follow:
    folder: Path
    offset: int = 0
    held: tuple[int, float] | None = None  # the newest point: not known to be intermediate


class StepWatcher:
    """Follows the named metric of the trials of one sweep."""

    def __init__(self, runs_dir: Path, sweep_id: str, metric: str) -> None:
        self.runs_dir, self.sweep_id, self.metric = runs_dir, sweep_id, metric
        self._known: set[str] = set(self._folders())
        self._follow: dict[int, _Follow] = {}

    def _folders(self) -> list[str]:
        try:
            return [p.name for p in self.runs_dir.iterdir() if p.is_dir()]
        except OSError:
            return []

    def _discover(self) -> None:
        """Follow every new run folder of a trial of this sweep (looking for one trial must
        not hide the folder of another)."""
        for name in self._folders():
            if name in self._known:
                continue
            try:
                ref = json.loads((self.runs_dir / name / RUN_FILE).read_text()).get("sweep")
            except (OSError, ValueError):
                continue  # not written yet: looked at again next time
            self._known.add(name)
            if isinstance(ref, dict) and ref.get("sweep_id") == self.sweep_id:
                number = ref.get("trial")
                if isinstance(number, int) and number not in self._follow:
                    self._follow[number] = _Follow(self.runs_dir / name)

    def new_points(self, number: int) -> list[tuple[int, float]]:
        """Intermediate (step, value) points of the metric logged by trial ``number`` since
        the last call: each one followed by a point at a later step (empty while its run
        folder is not found yet, and for a metric logged at one step only)."""
        if number not in self._follow:
            self._discover()
        follow = self._follow.get(number)
        if follow is None:
            return []
        try:
            with open(follow.folder / EVENTS_FILE, "rb") as handle:
                handle.seek(follow.offset)
                chunk = handle.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1
        follow.offset += end
        points: list[tuple[int, float]] = []
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (isinstance(event, dict) and event.get("kind") == "metric"
                    and event.get("name") == self.metric
                    and isinstance(event.get("value"), (int, float))
                    and isinstance(event.get("step"), int)):
                _add(follow, (int(event["step"]), float(event["value"])), points)
        return points

    def forget(self, number: int) -> None:
        self._follow.pop(number, None)


def _add(follow: _Follow, point: tuple[int, float], released: list[tuple[int, float]]) -> None:
    """Hold ``point`` as the newest; release the held one once a later step follows it (a
    value logged again at the held step replaces it; an earlier step is ignored)."""
    held = follow.held
    if held is not None and point[0] < held[0]:
        return
    if held is not None and point[0] > held[0]:
        released.append(held)
    follow.held = point
