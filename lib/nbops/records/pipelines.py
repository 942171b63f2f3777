"""Pipeline records: ``runs/pipelines/<id>.json`` (schema ``nbops.pipeline/1``).

Validated on every write and read, like run records; written atomically.
"""

from __future__ import annotations

from .documents import DocumentStore
from .schema import PIPELINE_SCHEMA
from .types import PipelineRecord

FOLDER = "pipelines"


class PipelineStore(DocumentStore[PipelineRecord]):
    """The pipeline records of a runs folder."""

    folder = FOLDER
    schema = PIPELINE_SCHEMA
    noun = "pipeline run"
    list_command = "nbops pipeline ls"
