"""Step metrics of running trials, read from their run folders (for Optuna pruning).

A trial's kernel appends ``nbops.log_metric`` events to ``<run>/events.jsonl`` while it
runs. The driver finds the run folder of each running trial (a new folder whose
``run.json`` names this sweep and trial) and follows its events file from where it last
read. Only complete lines are read; a half-written last line waits for the next poll.
Read-only: nothing here writes into a run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..records.store import EVENTS_FILE, RUN_FILE


@dataclass
class _Follow:
    folder: Path
    offset: int = 0
    points: list[tuple[int, float]] = field(default_factory=list)


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
        """(step, value) points of the metric logged by trial ``number`` since the last
        call (empty while its run folder is not found yet)."""
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
        points = []
        for line in chunk[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (isinstance(event, dict) and event.get("kind") == "metric"
                    and event.get("name") == self.metric
                    and isinstance(event.get("value"), (int, float))
                    and isinstance(event.get("step"), int)):
                points.append((int(event["step"]), float(event["value"])))
        return points

    def forget(self, number: int) -> None:
        self._follow.pop(number, None)
