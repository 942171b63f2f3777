"""Drift over time: the drift share and action of every succeeded monitor run (plain data)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ..records.queries import list_records


class DriftPoint(TypedDict):
    """One monitor run in the drift history."""

    id: str
    started_at: str
    share_drifted: float
    action: str
    drifted_columns: list[str]


def drift_history(runs_dir: str | Path | None = None, stage: str = "monitor"
                  ) -> list[DriftPoint]:
    """Drift share and action of each succeeded run of ``stage``, oldest first."""
    rows: list[DriftPoint] = []
    for record in list_records(runs_dir, stage=stage, status="succeeded"):
        outputs = record["outputs"]
        if "action" in outputs and "share_drifted" in outputs:
            rows.append({"id": record["id"], "started_at": record["started_at"],
                         "share_drifted": outputs["share_drifted"], "action": outputs["action"],
                         "drifted_columns": outputs.get("drifted_columns", [])})
    return rows
