"""A pipeline stage with a ``sweep:`` block: the sweep runs, its best trial is the stage.

Implements ``nbops.pipeline.hooks.StageSweeper``. The block is checked with the same
rules as ``nbops sweep`` options (``spec.from_block``) before any stage runs, and it must
name the metric that picks the winner. The stage's literal parameters and upstream
outputs are the base every trial starts from; swept parameters replace them. Trials are
recorded as trials of the sweep *and* as runs of the pipeline stage, and cached one by
one; the sweep is an MLflow child of the pipeline's parent run.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NbopsError, PipelineError, UsageError
from ..pipeline.hooks import StageSweeper, SweepStageContext
from ..pipeline.run import PipelineOptions, run_pipeline
from ..records.store import RunStore
from .driver import SweepOptions, SweepRun
from .spec import SweepSpec, from_block

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..pipeline.spec import Pipeline, Stage
    from ..records.types import PipelineRecord, RunRecord


def stage_spec(stage: Stage) -> SweepSpec:
    """The checked sweep of a stage.

    Raises:
        PipelineError: the block is invalid (the message names the stage).
    """
    try:
        spec = from_block(stage.template, stage.sweep, stage.parameters)
    except UsageError as exc:
        raise PipelineError(f"stage '{stage.name}', sweep: {exc}") from None
    clash = sorted(set(spec.space) & set(stage.refs))
    if clash:
        raise PipelineError(f"stage '{stage.name}', sweep: parameter(s) {', '.join(clash)} "
                            "come from an upstream stage and cannot be swept too")
    if spec.metric is None:
        raise PipelineError(f"stage '{stage.name}', sweep: name the metric that picks the "
                            "trial to pass on (maximize: METRIC or minimize: METRIC)")
    return spec


class PipelineSweeper:
    """Runs sweep stages in a thread of this process (their trials go to a scheduler)."""

    def check(self, stage: Stage) -> None:
        stage_spec(stage)

    def submit(self, context: SweepStageContext,
               stop: threading.Event) -> tuple[str, Future[RunRecord]]:
        stage = context.stage
        spec = stage_spec(stage)
        report = context.report
        options = SweepOptions(
            runs_dir=context.runs_dir, tracking_uri=context.tracking_uri, jobs=context.jobs,
            executor=context.executor, cwd=context.cwd, force=context.force,
            report=(lambda line: report(f"    {stage.name}: {line}")) if report else None,
            base={k: v for k, v in context.parameters.items() if k not in spec.space},
            upstream=context.upstream,
            pipeline={"run_id": context.pipeline_run, "stage": stage.name},
            origin=context.origin, secret_names=context.secret_names,
            parent_tags=({"mlflow.parentRunId": context.parent_run}
                         if context.parent_run else {}))
        sweep = SweepRun(stage.template, spec, options)
        future: Future[RunRecord] = Future()
        future.set_running_or_notify_cancel()
        thread = threading.Thread(target=_run, args=(sweep, stop, future),
                                  name=f"nbops-sweep-{stage.name}", daemon=True)
        thread.start()
        return sweep.id, future


def _run(sweep: SweepRun, stop: threading.Event, future: Future[RunRecord]) -> None:
    try:
        record = sweep.execute(stop)
        best = record["best"]
        if best is None:
            raise NbopsError(f"sweep {record['id']} has no trial to pass on: "
                             f"{record['error'] or 'no trial succeeded'}")
        future.set_result(RunStore(sweep.runs_dir).read(best["run_id"]))
    except BaseException as exc:  # noqa: BLE001 - handed to the pipeline through the future
        future.set_exception(exc)


_: type[StageSweeper] = PipelineSweeper  # mypy: the class implements the protocol


def run_pipeline_with_sweeps(pipe: Pipeline | str | Path,
                             options: PipelineOptions | None = None,
                             overrides: Iterable[tuple[str, str]] = ()) -> PipelineRecord:
    """``nbops.run_pipeline``: a pipeline run that can run ``sweep:`` stages."""
    opts = options or PipelineOptions()
    if opts.sweeper is None:
        opts.sweeper = PipelineSweeper()
    return run_pipeline(pipe, opts, overrides)
