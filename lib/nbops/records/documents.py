"""A folder of JSON documents of one schema under the runs folder (pipeline and sweep
records): validated on every write and read, written atomically so a reader never sees half
a document, named by id (``<folder>/<id>.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar, cast

from ..errors import RunNotFoundError, did_you_mean
from ..util.files import atomic_write_json
from .schema import load_document, validate

D = TypeVar("D", bound=Mapping[str, object])  # a record TypedDict with an "id"


class DocumentStore(Generic[D]):
    """The documents of one kind in a runs folder; subclasses name the kind."""

    folder: str  # under the runs folder
    schema: str  # the schema every document is validated against
    noun: str  # in messages: "pipeline run", "sweep"
    list_command: str  # the command that lists them

    def __init__(self, runs_dir: Path) -> None:
        self.root = runs_dir / self.folder

    def path(self, doc_id: str) -> Path:
        return self.root / f"{doc_id}.json"

    def write(self, record: D) -> None:
        validate(record, self.schema)
        atomic_write_json(self.path(str(record["id"])), record)

    def read(self, doc_id: str) -> D:
        """The validated document.

        Raises:
            RunNotFoundError: no such document (with the closest id).
            RecordError: unreadable or invalid document.
        """
        if "/" in doc_id or doc_id in ("", ".", ".."):
            raise RunNotFoundError(f"invalid {self.noun} id {doc_id!r}")
        try:
            data = load_document(self.path(doc_id), self.schema)
        except FileNotFoundError:
            raise RunNotFoundError(f"no {self.noun} '{doc_id}' in {self.root}."
                                   f"{did_you_mean(doc_id, self.ids())} List them with "
                                   f"'{self.list_command}'.") from None
        return cast(D, data)

    def ids(self) -> list[str]:
        """Ids, oldest first (ids start with their UTC start time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))
