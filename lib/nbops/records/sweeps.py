"""Sweep records: ``runs/sweeps/<id>.json`` (schema ``nbops.sweep/1``).

Validated on every write and read, like run and pipeline records; written atomically, so a
reader never sees half a record. ``latest`` names the newest sweep.
"""

from __future__ import annotations

import json

from ..errors import RunNotFoundError
from .documents import DocumentStore
from .schema import SWEEP_SCHEMA
from .types import SweepRecord

FOLDER = "sweeps"


class SweepStore(DocumentStore[SweepRecord]):
    """The sweep records of a runs folder."""

    folder = FOLDER
    schema = SWEEP_SCHEMA
    noun = "sweep"
    list_command = "nbops sweep ls"

    def read(self, sweep_id: str) -> SweepRecord:
        """The validated sweep record (``latest``: the newest one).

        Raises:
            RunNotFoundError: no such sweep (with the closest id).
            RecordError: unreadable or invalid record.
        """
        return super().read(self.latest_id() if sweep_id == "latest" else sweep_id)

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
