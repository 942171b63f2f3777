"""The shapes of what nbops persists: run records, pipeline records and sweep records.

These TypedDicts mirror ``schemas/run.v1.json``, ``schemas/pipeline.v1.json`` and
``schemas/sweep.v1.json``; the
schemas are what is enforced (on every write and read), the types are what code relies on.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Status = Literal["running", "succeeded", "failed", "killed"]
# why a run happened: a person at the command line or in Python, a notebook run by hand, a
# scheduler (cron, a systemd timer: NBOPS_TRIGGER=schedule), or a tick of the closed loop
Trigger = Literal["cli", "api", "interactive", "schedule", "loop"]
TRIGGERS: tuple[Trigger, ...] = ("cli", "api", "interactive", "schedule", "loop")


class Origin(TypedDict):
    """Who ran a run and why (the pipeline or sweep it belongs to is in its own refs)."""

    user: str
    host: str  # where it was launched (``runner.host`` is where it executed)
    trigger: Trigger
    cycle: str | None  # the loop cycle that started it
STATUSES: tuple[Status, ...] = ("running", "succeeded", "failed", "killed")
StageStatus = Literal["pending", "running", "succeeded", "failed", "killed"]


class RunError(TypedDict):
    """How a run failed: the exception's name and value, the cell, a readable message."""

    ename: str
    evalue: str
    cell_index: int | None
    message: str


class TemplateRef(TypedDict):
    name: str
    path: str
    sha256: str


class Artifact(TypedDict):
    path: str  # relative to the run folder, POSIX separators
    sha256: str  # of the content; of the link target's text for a symlink
    bytes: int
    symlink: NotRequired[str]  # the target, when the file is a symlink (never followed)


class MetricPoint(TypedDict):
    step: int
    value: float
    timestamp: float


class ModelRef(TypedDict):
    flavor: str  # sklearn | pytorch
    path: str  # models/<name>


class InputHash(TypedDict):
    parameter: str
    path: str
    sha256: str


class TrackingInfo(TypedDict):
    """Where the record is mirrored (MLflow) and whether the mirror is complete."""

    tracking_uri: str
    experiment_id: str | None
    run_id: str | None
    synced: bool


class RunnerInfo(TypedDict):
    pid: int
    host: str
    proc_start: int | None
    kernel_pid: int | None
    kernel_start: int | None  # the kernel's start tick: a reused pid is never killed


class DriverInfo(TypedDict):
    """The process that drives a pipeline run or a loop cycle: while it is gone and its
    record still says ``running``, a reader marks the record ``killed``
    (``records.reconcile``)."""

    pid: int
    host: str
    proc_start: int | None  # its start tick: a reused pid is never taken for it


class PipelineRef(TypedDict):
    run_id: str
    stage: str
    cache_key: str  # with the outside state read when the run ended (pipeline.cache)
    inputs_key: NotRequired[str]  # without it (records before nbops 0.1 have none)
    reads: NotRequired[list[dict[str, Any]]]  # that state (the template's nbops.reads)


class SweepRef(TypedDict):
    """A run that is one trial of a sweep: the sweep, the trial's number, its cache key."""

    sweep_id: str
    trial: int
    cache_key: str


class GitState(TypedDict):
    commit: str | None
    dirty: bool | None


class Environment(TypedDict):
    python: str
    executable: str
    platform: str
    packages: dict[str, str]
    git: GitState


class RunRecord(TypedDict):
    """``runs/<id>/run.json`` (schema ``nbops.run/1``)."""

    schema: str
    id: str
    stage: str
    template: TemplateRef | None
    parameters: dict[str, Any]
    status: Status
    started_at: str
    started_at_epoch: float
    ended_at: str | None
    duration_s: float | None
    metrics: dict[str, float]
    metric_history: dict[str, list[MetricPoint]]
    logged_params: dict[str, Any]
    outputs: dict[str, Any]
    artifacts: list[Artifact]
    models: dict[str, ModelRef]
    inputs: list[InputHash]
    warnings: list[str]
    environment: Environment
    error: RunError | None
    mlflow: TrackingInfo | None
    runner: RunnerInfo
    tags: dict[str, str]
    pipeline: PipelineRef | None
    sweep: NotRequired[SweepRef | None]  # only in records of sweep trials
    secrets: NotRequired[dict[str, str]]  # secret name -> keyed fingerprint (never the value)
    origin: NotRequired[Origin]  # who and why (records before nbops 0.1 have none)


class StageState(TypedDict, total=False):
    status: StageStatus
    run_id: str | None
    cached: bool
    error: str | None
    sweep_id: str  # a stage with a ``sweep:`` block: the sweep that chose its run
    reason: str  # why it ran (pipeline.cache.Decision.reason); absent when cached


class Retrained(TypedDict):
    trigger: str
    action: str
    stages: list[str]
    previous_runs: dict[str, str | None]


class PipelineTracking(TypedDict):
    tracking_uri: str
    run_id: str
    experiment_id: str | None


class PipelineRecord(TypedDict, total=False):
    """``runs/pipelines/<id>.json`` (schema ``nbops.pipeline/1``)."""

    schema: str
    id: str
    name: str
    file: str
    status: Status
    started_at: str
    ended_at: str | None
    duration_s: float | None
    order: list[str]
    error: str | None
    mlflow: PipelineTracking | None
    stages: dict[str, StageState]
    summary: dict[str, Any]
    retrained: Retrained
    driver: DriverInfo  # the driving process (absent in older records: never reconciled)


TrialStatus = Literal["pending", "running", "succeeded", "cached", "failed", "killed",
                      "pruned"]
Strategy = Literal["grid", "random", "optuna"]
Direction = Literal["maximize", "minimize"]


class TrialEntry(TypedDict):
    """One trial of a sweep: its parameters, its run, how it ended, its metric value."""

    number: int
    parameters: dict[str, Any]
    status: TrialStatus
    run_id: str | None
    value: float | None  # the optimised metric (None: not reached, or no metric chosen)
    metrics: dict[str, float]
    error: str | None
    optuna_state: NotRequired[str]  # what Optuna was told (COMPLETE, PRUNED, FAIL)


class BestTrial(TypedDict):
    number: int
    run_id: str
    value: float | None


class SweepPipelineRef(TypedDict):
    run_id: str
    stage: str


class SweepRecord(TypedDict):
    """``runs/sweeps/<id>.json`` (schema ``nbops.sweep/1``)."""

    schema: str
    id: str
    template: TemplateRef
    strategy: Strategy
    metric: str | None
    direction: Direction | None
    seed: int | None
    fixed: dict[str, Any]
    space: dict[str, Any]
    status: Status
    started_at: str
    ended_at: str | None
    duration_s: float | None
    error: str | None
    mlflow: PipelineTracking | None
    pipeline: SweepPipelineRef | None
    trials: list[TrialEntry]
    best: BestTrial | None


class CycleWindow(TypedDict):
    start: str | None  # the previous cycle's window end (None: the log's beginning)
    end: str
    rows: int  # answered rows logged in the window


class CycleDrift(TypedDict):
    action: str
    share: float | None


class CycleDecision(TypedDict):
    action: Literal["none", "retrain", "experiment"]
    cause: Literal["drift", "performance", "age", "schedule", "none"]
    reason: str
    blocked: str | None


class CycleOutcome(TypedDict):
    status: str  # the retrain pipeline's
    version: int | None  # the version it registered
    champion_before: int | None
    champion_after: int | None
    promoted: bool  # the champion changed


class CycleReference(TypedDict):
    path: str | None  # the drift reference this cycle's monitor used
    rotated_to: str | None  # the new champion's reference, from now on


class CycleData(TypedDict):
    """What a loop retrain trained on: the base table plus the labelled recent traffic."""

    path: str
    sha256: str
    base: str
    base_rows: int
    window_rows: int  # labelled rows of the prediction log appended to the base
    since: str | None  # log rows taken were logged at or after this (None: all) ...
    until: str  # ... and before this


class CyclePerformance(TypedDict):
    """The champion on labelled live traffic: its accuracy against its evaluation's."""

    version: int
    rows: int  # labelled rows it answered since it became champion
    accuracy: float | None  # on those rows (None: no labelled rows yet)
    expected: float | None  # its evaluate run's accuracy (None: not recorded)


ChallengerStatus = Literal["open", "awaiting_approval", "promoted", "refused", "superseded"]


class CycleTrial(TypedDict):
    """A challenger the retrain registered but the promotion policy held back, tried on
    live traffic (shadow or split) until the A/B test decides; carried from cycle to cycle
    while ``open`` or ``awaiting_approval``."""

    version: int  # the challenger on trial
    champion: int | None  # the champion it has to beat
    since: str  # log rows from here on are the trial's
    opened_by: str  # the cycle whose retrain registered it
    status: ChallengerStatus
    labelled: int  # labelled rows the challenger (or shadow) answered in the trial so far
    ab_run: str | None  # the last ab_evaluate run
    decision: str | None  # its decision: win, equivalent, inconclusive
    p_value: float | None
    test: str | None
    reason: str  # why the trial stands where it does


class CycleRecord(TypedDict):
    """``runs/loop/cycles/<id>.json`` (schema ``nbops.cycle/1``): one tick of the loop."""

    schema: str
    id: str
    model: str
    status: Status
    started_at: str
    started_at_epoch: float
    ended_at: str | None
    duration_s: float | None
    origin: Origin
    window: CycleWindow
    monitor_run: str | None
    drift: CycleDrift | None
    decision: CycleDecision | None
    pipeline_run: str | None
    outcome: CycleOutcome | None
    reference: CycleReference
    error: str | None
    data: NotRequired[CycleData | None]  # a retrain with fresh_data: what it trained on
    performance: NotRequired[CyclePerformance | None]  # with triggers.accuracy_drop
    trial: NotRequired[CycleTrial | None]  # the challenger on trial this cycle, as it left it
    driver: NotRequired[DriverInfo]  # the tick's process (absent in older records)
