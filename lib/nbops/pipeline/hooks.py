"""What the pipeline run asks of the layers above it: running a stage with a ``sweep:``
block.

The pipeline does not know how to sweep (``nbops.sweep`` sits above it and imports it);
it hands such a stage to a :class:`StageSweeper` given in ``PipelineOptions.sweeper``
(the command line passes ``nbops.sweep.stage.PipelineSweeper``). The sweeper checks every
block before anything runs and returns a future of the best trial's record, which the
pipeline treats as the stage's record (``${stage.outputs.X}`` and
``${stage.best.outputs.X}`` both read it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..records.types import Origin, RunRecord
    from .spec import Stage


@dataclass
class SweepStageContext:
    """A sweep stage ready to run: its parameters, upstream records, where and how."""

    stage: Stage
    parameters: dict[str, Any]  # resolved, upstream outputs included
    upstream: dict[str, RunRecord]
    pipeline_run: str
    cwd: Path
    runs_dir: Path
    tracking_uri: str | None
    jobs: int
    executor: str
    force: bool = False
    parent_run: str | None = None  # the pipeline's MLflow parent run
    report: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    origin: Origin | None = None  # who started the pipeline, and why
    secret_names: tuple[str, ...] = ()  # every secret the pipeline's templates declare


class StageSweeper(Protocol):
    """Runs the ``sweep:`` block of a pipeline stage."""

    def check(self, stage: Stage) -> None:
        """Raise a UsageError naming the stage when its block is invalid."""

    def submit(self, context: SweepStageContext,
               stop: threading.Event) -> tuple[str, Future[RunRecord]]:
        """Start the sweep; returns its id and a future of the best trial's record (an
        NbopsError when no trial can be chosen)."""
