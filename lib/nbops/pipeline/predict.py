"""``pipeline show``: what ``pipeline run`` would do with each stage, decided as it would.

Each stage is looked up with :meth:`~nbops.pipeline.cache.Lookup.decide`, the function
``pipeline run`` acts on, against the same runs folder, registry, overrides and
``--force``. A stage whose upstream stages all come from the cache is predicted exactly:
``cache`` (with the run it reuses) or ``run`` (with the reason). A stage that waits for
an upstream stage that will run cannot be known before that one has run (a stage that
writes the same content again leaves its downstream cached): it is ``decide``, naming the
stages it waits for, unless it runs anyway (``--force``, ``nbops.cache: false``, or no
succeeded run of its template in the runs folder: nothing it could be served from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import NbopsError
from ..records.store import RunStore
from ..records.types import RunRecord
from .cache import Lookup, stage_parameters
from .spec import Pipeline

Will = Literal["cache", "run", "decide", "sweep", "fail"]


@dataclass
class Prediction:
    """What ``pipeline run`` will do with one stage."""

    will: Will
    reason: str
    run_id: str | None = None  # the cached run (will == "cache")
    waits_for: list[str] = field(default_factory=list)  # upstream stages that will run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.will == "cache":
            return f"cached (run {self.run_id})"
        if self.will == "decide":
            return (f"decided once {', '.join(self.waits_for)} ran: runs if what it "
                    "receives changes")
        if self.will == "sweep":
            return "will sweep (each trial is cached on its own: nbops sweep ls)"
        if self.will == "fail":
            return f"will fail before running ({self.reason})"
        return f"will run ({self.reason})"


def predict(pipe: Pipeline, lookup: Lookup, force: bool = False) -> dict[str, Prediction]:
    """Each stage's prediction, in the pipeline's order."""
    done: dict[str, RunRecord] = {}
    found: dict[str, Prediction] = {}
    ran = _templates_run(lookup.store)
    for name in pipe.order:
        stage = pipe.stages[name]
        waiting = [d for d in stage.upstream if d not in done]
        if waiting:
            if force or not stage.template.cache or stage.template.sha256 not in ran:
                reason = ("--force" if force else "never cached: nbops.cache false"
                          if not stage.template.cache else "no earlier run of its template")
                found[name] = Prediction("run", reason, waits_for=waiting)
            else:
                found[name] = Prediction("decide", "an upstream stage will run",
                                         waits_for=waiting)
            continue
        if stage.sweep is not None:
            found[name] = Prediction("sweep", "a sweep stage")
            continue
        upstream = {d: done[d] for d in stage.upstream}
        try:
            resolved = stage_parameters(stage, upstream, lookup.store.root)
            decision = lookup.decide(stage, resolved, upstream, "--force" if force else None)
        except NbopsError as exc:
            found[name] = Prediction("fail", str(exc))
            continue
        if decision.cached is not None:
            done[name] = decision.cached
            found[name] = Prediction("cache", "same inputs and state as an earlier run",
                                     run_id=decision.cached["id"])
        else:
            found[name] = Prediction("run", decision.reason)
    return found


def _templates_run(store: RunStore) -> set[str]:
    """The sha256 of every template with a succeeded run in the store."""
    found = set()
    for run_id in store.ids():
        try:
            summary = store.read(run_id, full=False)
        except NbopsError:
            continue
        if summary["status"] == "succeeded" and summary["template"]:
            found.add(summary["template"]["sha256"])
    return found
