"""A challenger on trial: the A/B step of the loop, between a retrain and a promotion.

When a retrain registers a version that beat the champion on the holdout but the project's
promotion policy held it back (``promotion: champion: evidence: [ab_win]`` and/or
approvals), the cycle opens a trial. The version holds the ``challenger`` alias, so a
server started with ``--shadow MODEL@challenger`` (paired test) or ``--challenger
MODEL@challenger --split P`` (split test) picks it up by itself. Every later tick carries
the trial on (``carried``) and advances it (``Trial.advance``):

1. the champion moved meanwhile: to the challenger (promoted by a person) the trial ends
   ``promoted``, to anything else ``superseded``;
2. when the policy wants ``ab_win`` evidence and no A/B run has won yet: with at least
   ``challenger.min_labelled`` labelled rows that this version answered since the trial
   opened, the ``ab_evaluate`` template runs on that window (only rows of the two versions
   on trial) and ``judge`` reads its decision: a win goes on to 3; equivalent, worse or a
   failed guardrail refuse; an inconclusive test waits for more rows, up to
   ``challenger.max_labelled``, then refuses;
3. ``promote`` through the policy (compare-and-set on the champion the trial started
   from): the alias moves (``promoted``, and the drift reference is rotated to the trial's
   traffic), or approvals are missing (``awaiting_approval``: later ticks retry without
   running a new test, so an approval that saw this evidence keeps counting);
4. a refused challenger loses the ``challenger`` alias (it goes back to the champion), so
   the shadow stops answering with it.

Invariants: a trial is judged only on rows logged after it opened and answered by its two
versions; a refused or superseded trial is never reopened (a new retrain opens a new one);
the loop acts in the ledger as ``nbops-loop``, so a person may approve what it proposed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..contract.config import config_file
from ..contract.secrets import declared
from ..contract.template import resolve as resolve_template
from ..errors import NbopsError, PromotionBlocked
from ..promotion.policy import load_policy
from ..promotion.service import promote
from ..records.types import CycleRecord, CycleTrial, Origin
from ..runner import RunOptions, run
from ..serving.abtest import join_labels
from ..serving.predlog import META, log_folder, read_log
from ..tracking import registry
from ..util.envvars import LOOP_USER
from ..util.files import atomic_write_bytes
from .config import LoopConfig
from .fresh import FOLDER as FRESH_FOLDER
from .fresh import labels_of

Verdict = Literal["promote", "refuse", "wait"]
OPEN = ("open", "awaiting_approval")
TEMPLATE = "ab_evaluate"


def secret_names(cfg: LoopConfig) -> tuple[str, ...]:
    """Every secret the loop's templates declare (the monitor's, the A/B test's, the
    stages of the retrain and experiment pipelines): withheld from each run of the loop
    that does not declare it, scrubbed from all. A template or pipeline that cannot be
    loaded adds none (the run that needs it says why)."""
    from ..pipeline.spec import load

    templates = []
    for name in (cfg.monitor_template, TEMPLATE):
        try:
            templates.append(resolve_template(name))
        except NbopsError:
            pass
    for path in dict.fromkeys((cfg.retrain, cfg.experiment)):
        try:
            templates += [stage.template for stage in load(path).stages.values()]
        except NbopsError:
            pass
    return declared(templates)


def carried(history: list[CycleRecord]) -> CycleTrial | None:
    """The trial the last cycle with one left open, to go on with (None: no open trial)."""
    for cycle in reversed(history):
        trial = cycle.get("trial")
        if trial:
            return CycleTrial(**trial) if trial["status"] in OPEN else None
    return None


def opened(version: int, champion: int | None, since: str, cycle: str) -> CycleTrial:
    return {"version": version, "champion": champion, "since": since, "opened_by": cycle,
            "status": "open", "labelled": 0, "ab_run": None, "decision": None,
            "p_value": None, "test": None,
            "reason": f"v{version} registered as challenger; the promotion policy asks for "
                      "evidence from live traffic"}


def judge(decision: str, reason: str, labelled: int, cfg: LoopConfig) -> tuple[Verdict, str]:
    """What an A/B decision means for the trial (pure)."""
    if decision == "win":
        return "promote", f"A/B win: {reason}"
    if decision == "equivalent":
        return "refuse", f"A/B equivalent ({reason}): the champion stays"
    if reason.startswith(("challenger worse", "guardrail failed")):
        return "refuse", f"A/B: {reason}"
    if labelled >= cfg.trial_max_labelled:
        return "refuse", (f"no win after {labelled} labelled rows (challenger.max_labelled "
                          f"{cfg.trial_max_labelled}): {reason}")
    return "wait", f"A/B inconclusive: {reason}"


def blocking(trial: CycleTrial | None) -> str | None:
    """Why no retrain may start while this trial stands (None: it does not block)."""
    if trial is None:
        return None
    if trial["status"] in OPEN:
        return f"challenger v{trial['version']} is on trial ({trial['status']})"
    # every trial a cycle carries starts open: a closed one was closed by this cycle, which
    # then leaves the next retrain to the next cycle (one trial per cycle record)
    return f"challenger v{trial['version']} was {trial['status']} in this cycle"


def describe(trial: CycleTrial, cycle: str) -> str:
    """The trial as one cycle left it, in words."""
    name = f"challenger v{trial['version']}"
    if trial["opened_by"] == cycle and trial["status"] == "open":
        return f"{name} on trial (shadow)"
    test = ""
    if trial["decision"]:
        p_value = f", p = {trial['p_value']:.2g}" if trial["p_value"] is not None else ""
        test = f"A/B {trial['decision']} ({trial['test']}{p_value}, {trial['labelled']} rows)"
    said = {"open": f"{name}: {test or trial['reason']}, still on trial",
            "awaiting_approval": f"{name}: {test}, awaiting approval",
            "promoted": f"{name}: {test or trial['reason']}, promoted",
            "refused": f"{name}: {test or trial['reason']}, refused",
            "superseded": f"{name}: superseded ({trial['reason']})"}
    return said[trial["status"]]


class Trial:
    """Advance a cycle's trial (see the module doc)."""

    def __init__(self, cfg: LoopConfig, uri: str, runs: Path, cycle: str, origin: Origin,
                 say: Callable[[str], None]) -> None:
        self.cfg, self.uri, self.runs, self.cycle, self.origin = cfg, uri, runs, cycle, origin
        self.say = say
        self.log = log_folder(runs, cfg.model)
        self.config = config_file(cfg.root)

    def advance(self, trial: CycleTrial, until: str) -> str | None:
        """Move ``trial`` on (in place); the new drift reference when it was promoted."""
        champion = self._champion()
        if champion == trial["version"]:
            return self._promoted(trial, until, "promoted outside the loop")
        if champion != trial["champion"]:
            trial["status"] = "superseded"
            trial["reason"] = (f"the champion moved to v{champion} during the trial of "
                               f"v{trial['version']}")
            return None
        if trial["status"] == "open" and self._needs_test():
            verdict = self._test(trial, until)
            if verdict == "refuse":
                self._refuse(trial)
                return None
            if verdict == "wait":
                return None
        return self._promote(trial, until)

    def _champion(self) -> int | None:
        found = registry.version_by_alias(self.cfg.model, "champion", self.uri)
        return found["version"] if found else None

    def _needs_test(self) -> bool:
        return "ab_win" in load_policy("champion", self.config)["evidence"]

    def _test(self, trial: CycleTrial, until: str) -> Verdict:
        labels = labels_of(self.cfg.labels) if self.cfg.labels and self.cfg.labels.is_dir() \
            else None
        window = f"{trial['since']}/{until}"
        trial["labelled"] = labelled_rows(self.log, labels, self.cfg.target, window,
                                          trial["version"])
        if labels is None or trial["labelled"] < self.cfg.trial_min_labelled:
            trial["reason"] = (f"waiting for labelled traffic: {trial['labelled']} of "
                               f"{self.cfg.trial_min_labelled} rows (challenger.min_labelled)"
                               + ("" if self.cfg.labels else
                                  "; set loop.fresh_data.labels to the labels folder"))
            self.say(f"trial of v{trial['version']}: {trial['reason']}")
            return "wait"
        record = run(resolve_template(TEMPLATE).path, self._parameters(trial, labels, window),
                     options=RunOptions(runs_dir=self.runs, tracking_uri=self.uri,
                                        origin=self.origin, tags={"nbops.cycle": self.cycle},
                                        secret_names=secret_names(self.cfg)))
        trial["ab_run"] = record["id"]
        if record["status"] != "succeeded":
            message = record["error"]["message"] if record["error"] else record["status"]
            trial["reason"] = f"the A/B run {record['id']} ended {record['status']}"
            raise NbopsError(f"the A/B run {record['id']} ended {record['status']}: {message}")
        outputs = record["outputs"]
        decision = trial["decision"] = str(outputs.get("decision"))
        p_value = outputs.get("p_value")
        trial["p_value"] = float(p_value) if isinstance(p_value, (int, float)) else None
        trial["test"] = str(outputs.get("test"))
        reason = str(outputs.get("reason") or _reason(record))
        verdict, trial["reason"] = judge(decision, reason, trial["labelled"], self.cfg)
        self.say(f"trial of v{trial['version']}: {trial['reason']} ({trial['labelled']} "
                 f"labelled rows, run {record['id']})")
        return verdict

    def _parameters(self, trial: CycleTrial, labels: Any, window: str) -> dict[str, Any]:
        path = self.runs / FRESH_FOLDER / f"{self.cycle}-labels.parquet"
        atomic_write_bytes(path, labels.to_parquet(index=False))
        return {"log_path": str(self.log), "labels_path": str(path),
                "label_column": self.cfg.target, "window": window,
                "alpha": self.cfg.trial_alpha, "margin": self.cfg.trial_margin,
                "latency_margin": self.cfg.trial_latency_margin,
                "error_margin": self.cfg.trial_error_margin,
                "propose": False, "champion_version": trial["champion"] or 0,
                "challenger_version": trial["version"]}

    def _promote(self, trial: CycleTrial, until: str) -> str | None:
        reason = trial["reason"] if trial["decision"] == "win" else "loop: trial passed"
        try:
            promote(self.cfg.model, trial["version"], "champion", reason=reason,
                    who=LOOP_USER, expected=trial["champion"], runs_dir=self.runs,
                    tracking_uri=self.uri, config=self.config)
        except PromotionBlocked as exc:
            trial["status"], trial["reason"] = "awaiting_approval", str(exc)
            self.say(f"trial of v{trial['version']}: awaiting approval: {exc}")
            return None
        return self._promoted(trial, until, reason)

    def _promoted(self, trial: CycleTrial, until: str, reason: str) -> str | None:
        trial["status"], trial["reason"] = "promoted", reason
        self.say(f"trial of v{trial['version']}: promoted v{trial['champion']} -> "
                 f"v{trial['version']}")
        return snapshot(self.log, f"{trial['since']}/{until}",
                        self.runs / FRESH_FOLDER / f"{self.cycle}-reference.parquet")

    def _refuse(self, trial: CycleTrial) -> None:
        trial["status"] = "refused"
        if trial["champion"] is not None:  # the shadow goes back to the champion
            registry.promote(self.cfg.model, trial["champion"], "challenger",
                             reason=f"trial of v{trial['version']} refused: {trial['reason']}",
                             tracking_uri=self.uri, who=LOOP_USER)
        self.say(f"trial of v{trial['version']}: refused, champion v{trial['champion']} stays")


def labelled_rows(log: Path, labels: Any, target: str, window: str, version: int) -> int:
    """Rows of ``window`` that ``version`` answered as challenger or shadow and that have a
    label now."""
    if labels is None:
        return 0
    try:
        logged = read_log(log, window)
    except ValueError:
        return 0
    mine = logged[logged["_variant"].isin(["challenger", "shadow"])
                  & (logged["_version"] == version)]
    return len(join_labels(mine, labels, target)) if len(mine) else 0


def snapshot(log: Path, window: str, out: Path) -> str | None:
    """The answered rows of ``window`` (inputs only, a shadow's repeats left out) as a
    Parquet file; None when there are none."""
    try:
        logged = read_log(log, window)
    except ValueError:
        return None
    rows = logged[logged["_variant"] != "shadow"]
    rows = rows.drop(columns=[c for c in (*META, "prediction") if c in rows.columns])
    if not len(rows):
        return None
    atomic_write_bytes(out, rows.to_parquet(index=False))
    return str(out)


def _reason(record: Any) -> str:
    return f"decision {record['outputs'].get('decision')}"
