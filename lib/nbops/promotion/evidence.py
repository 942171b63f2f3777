"""What the run records say about a registered version, as evidence for promoting it.

- ``evaluate_pass``: the version's ``nbops.evaluate_run`` tag (set by the register stage)
  names a succeeded evaluate run whose ``verdict`` output is ``pass``;
- ``ab_win``: a succeeded ``ab_evaluate`` run decided ``win`` for this model and version.

Evidence is identified by run ids; an approval remembers the ids it saw, so it no longer
counts once the evidence changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ..errors import NbopsError
from ..records.queries import get_record, list_records
from ..tracking.registry import get_version
from .policy import EvidenceKind


class Evidence(TypedDict):
    kind: EvidenceKind
    run_id: str
    detail: str


def evidence_for(model: str, version: int, runs_dir: Path, tracking_uri: str
                 ) -> list[Evidence]:
    found: list[Evidence] = []
    tags = get_version(model, version, tracking_uri)["tags"]
    evaluate_run = tags.get("nbops.evaluate_run", "")
    if evaluate_run:
        try:
            record = get_record(evaluate_run, runs_dir)
        except NbopsError:
            record = None
        if record and record["status"] == "succeeded" and \
                record["outputs"].get("verdict") == "pass":
            found.append({"kind": "evaluate_pass", "run_id": evaluate_run,
                          "detail": "evaluate verdict: pass"})
    for record in list_records(runs_dir, stage="ab_evaluate", status="succeeded"):
        outputs = record["outputs"]
        if (outputs.get("decision") == "win" and outputs.get("model_name") == model
                and outputs.get("challenger_version") == version):
            found.append({"kind": "ab_win", "run_id": record["id"],
                          "detail": f"A/B win over v{outputs.get('champion_version')} "
                                    f"({outputs.get('test', 'test')})"})
    return found
