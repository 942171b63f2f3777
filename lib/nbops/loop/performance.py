"""The champion on labelled live traffic: what ``triggers.accuracy_drop`` watches.

The rows the champion version answered (as ``champion``: not a shadow's, not another
version's) since it became champion (and within ``accuracy_window``), joined with the
labels that exist now, scored as the share of predictions equal to their label; compared
with the ``accuracy`` metric of the version's evaluate run (the register stage's
``nbops.evaluate_run`` tag). Labels come late, so each tick measures on what has arrived:
the count is in the cycle record and the trigger waits for ``accuracy_rows`` of them.

Invariant: read-only; a missing log, labels folder, evaluate record or metric gives a
measurement with ``None`` in it, never an error (the other triggers still decide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import NbopsError
from ..records.queries import get_record
from ..records.types import CyclePerformance
from ..serving.abtest import join_labels
from ..serving.predlog import read_log
from ..tracking import registry
from .fresh import labels_of


def measure(model: str, uri: str, runs: Path, log: Path, labels: Path | None, target: str,
            since: str | None) -> CyclePerformance | None:
    """The champion's accuracy on labelled traffic since ``since`` (None: no champion)."""
    champion = registry.version_by_alias(model, "champion", uri)
    if champion is None:
        return None
    version = champion["version"]
    rows, accuracy = live_accuracy(log, labels_of(labels) if labels and labels.is_dir()
                                   else None, target, version, since)
    return {"version": version, "rows": rows, "accuracy": accuracy,
            "expected": _evaluated(champion["tags"].get("nbops.evaluate_run", ""), runs)}


def live_accuracy(log: Path, labels: Any, target: str, version: int,
                  since: str | None) -> tuple[int, float | None]:
    """(labelled rows, accuracy) of ``version`` answering as champion since ``since``."""
    if labels is None:
        return 0, None
    try:
        logged = read_log(log, f"{since or ''}/")
    except ValueError:
        return 0, None
    mine = logged[(logged["_variant"] == "champion") & (logged["_version"] == version)]
    if not len(mine):
        return 0, None
    joined = join_labels(mine, labels, target)
    if not len(joined):
        return 0, None
    right = joined["prediction"].astype(str) == joined["_label"].astype(str)
    return len(joined), float(right.mean())


def _evaluated(run_id: str, runs: Path) -> float | None:
    if not run_id:
        return None
    try:
        value = get_record(run_id, runs)["metrics"].get("accuracy")
    except NbopsError:
        return None
    return float(value) if isinstance(value, (int, float)) else None
