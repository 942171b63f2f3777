"""Sweep records: ``runs/sweeps/<id>.json`` (schema ``nbops.sweep/1``).

Validated on every write and read, like run and pipeline records; written atomically, so a
reader never sees half a record. ``latest`` names the newest sweep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from ..errors import RunNotFoundError, did_you_mean
from ..util.files import atomic_write_json
from .schema import SWEEP_SCHEMA, load_document, validate
from .types import SweepRecord

FOLDER = "sweeps"


class SweepStore:
    """The sweep records of a runs folder."""

    def __init__(self, runs_dir: Path) -> None:
        self.root = runs_dir / FOLDER

    def path(self, sweep_id: str) -> Path:
        return self.root / f"{sweep_id}.json"

    def write(self, record: SweepRecord) -> None:
        validate(record, SWEEP_SCHEMA)
        atomic_write_json(self.path(record["id"]), record)

    def read(self, sweep_id: str) -> SweepRecord:
        """The validated sweep record (``latest``: the newest one).

        Raises:
            RunNotFoundError: no such sweep (with the closest id).
            RecordError: unreadable or invalid record.
        """
        if sweep_id == "latest":
            sweep_id = self.latest_id()
        if "/" in sweep_id or sweep_id in ("", ".", ".."):
            raise RunNotFoundError(f"invalid sweep id {sweep_id!r}")
        try:
            data = load_document(self.path(sweep_id), SWEEP_SCHEMA)
        except FileNotFoundError:
            raise RunNotFoundError(f"no sweep '{sweep_id}' in {self.root}."
                                   f"{did_you_mean(sweep_id, self.ids())} List them with "
                                   "'nbops sweep ls'.") from None
        return cast(SweepRecord, data)

    def latest_id(self) -> str:
        """The sweep started last. Ids start with their start time to the second; sweeps
        started within the same second are told apart by their records' ``started_at``.

        Raises:
            RunNotFoundError: no sweeps yet.
        """
        ids = self.ids()
        if not ids:
            raise RunNotFoundError(f"no sweeps in {self.root}; start one with "
                                   "'nbops sweep TEMPLATE --grid NAME=V1,V2'")
        second = ids[-1].split("-", 1)[0]
        same = [i for i in ids if i.split("-", 1)[0] == second]
        if len(same) == 1:
            return same[0]
        return max(same, key=lambda i: (self._started(i), i))

    def _started(self, sweep_id: str) -> str:
        try:
            value = json.loads(self.path(sweep_id).read_text(encoding="utf-8"))["started_at"]
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        return str(value)

    def ids(self) -> list[str]:
        """Sweep ids, oldest first (ids start with their UTC start time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))
