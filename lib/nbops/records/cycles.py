"""Loop cycle records: ``runs/loop/cycles/<id>.json`` (schema ``nbops.cycle/1``).

Validated on every write and read; written atomically. Ids start with the cycle's UTC start
time, so listing them in order lists the cycles in the order they started.
"""

from __future__ import annotations

from ..errors import NbopsError
from .documents import DocumentStore
from .schema import CYCLE_SCHEMA
from .types import CycleRecord

FOLDER = "loop/cycles"


class CycleStore(DocumentStore[CycleRecord]):
    """The loop cycles of a runs folder."""

    folder = FOLDER
    schema = CYCLE_SCHEMA
    noun = "loop cycle"
    list_command = "nbops loop history"

    def all(self) -> list[CycleRecord]:
        """Every readable cycle, oldest first (an unreadable one is skipped: history and
        limits are computed from what can be read)."""
        found: list[CycleRecord] = []
        for cycle_id in self.ids():
            try:
                found.append(self.read(cycle_id))
            except NbopsError:
                continue
        return found
