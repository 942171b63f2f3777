"""Pipeline records: ``runs/pipelines/<id>.json`` (schema ``nbops.pipeline/1``).

Validated on every write and read, like run records; written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from ..errors import RunNotFoundError, did_you_mean
from ..util.files import atomic_write_json
from .schema import PIPELINE_SCHEMA, load_document, validate
from .types import PipelineRecord

FOLDER = "pipelines"


class PipelineStore:
    """The pipeline records of a runs folder."""

    def __init__(self, runs_dir: Path) -> None:
        self.root = runs_dir / FOLDER

    def path(self, pipeline_id: str) -> Path:
        return self.root / f"{pipeline_id}.json"

    def write(self, record: PipelineRecord) -> None:
        validate(record, PIPELINE_SCHEMA)
        atomic_write_json(self.path(record["id"]), record)

    def read(self, pipeline_id: str) -> PipelineRecord:
        """The validated pipeline record.

        Raises:
            RunNotFoundError: no such pipeline run (with the closest id).
            RecordError: unreadable or invalid record.
        """
        if "/" in pipeline_id or pipeline_id in ("", ".", ".."):
            raise RunNotFoundError(f"invalid pipeline run id {pipeline_id!r}")
        try:
            data = load_document(self.path(pipeline_id), PIPELINE_SCHEMA)
        except FileNotFoundError:
            raise RunNotFoundError(f"no pipeline run '{pipeline_id}' in {self.root}."
                                   f"{did_you_mean(pipeline_id, self.ids())} List them with "
                                   "'nbops pipeline ls'.") from None
        return cast(PipelineRecord, data)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))
