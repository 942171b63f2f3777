"""The promotion policy of a project, read from ``nbops.yaml``.

``nbops.yaml`` is looked for in the working directory and its parents (the first found
wins); its ``promotion`` section maps an alias to what a version needs before it may hold
that alias::

    promotion:
      champion:
        evidence: [evaluate_pass, ab_win]   # any one of these (empty: none needed)
        approvals: 1                        # distinct people other than the proposer

An alias without an entry (or no file) needs nothing: promotion is immediate, and still
recorded in the ledger. Unknown keys and evidence names are errors, not ignored.

Whatever the policy, a challenger replaces a champion only with a strictly better score on
the compared metric (:func:`beats`): a tie never promotes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypedDict, cast

from ..contract.config import config_file, read_section
from ..errors import ConfigError

EvidenceKind = Literal["evaluate_pass", "ab_win"]
EVIDENCE_KINDS: tuple[EvidenceKind, ...] = ("evaluate_pass", "ab_win")


class AliasPolicy(TypedDict):
    evidence: list[EvidenceKind]
    approvals: int


NO_POLICY: AliasPolicy = {"evidence": [], "approvals": 0}


def beats(challenger: float, champion: float | None, lower_is_better: bool = False) -> bool:
    """Whether a challenger's score wins the champion alias: True when there is no champion
    (``None``), else only when strictly better (a tie keeps the champion; NaN never wins).
    """
    if champion is None:
        return True
    return challenger < champion if lower_is_better else challenger > champion


def load_policy(alias: str, config: Path | None = None) -> AliasPolicy:
    """The policy for ``alias`` (``NO_POLICY`` when the project sets none)."""
    path = config or config_file()
    if path is None:
        return NO_POLICY
    section = read_section(path, "promotion")
    if section is None:
        return NO_POLICY
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'promotion' must map aliases to their policy")
    entry = section.get(alias)
    if entry is None:
        return NO_POLICY
    return _check(entry, f"{path}: promotion.{alias}")


def _check(entry: object, where: str) -> AliasPolicy:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a mapping with 'evidence' and/or 'approvals'")
    unknown = sorted(set(map(str, entry)) - {"evidence", "approvals"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use evidence, "
                          "approvals")
    evidence = entry.get("evidence", [])
    if isinstance(evidence, str):
        evidence = [evidence]
    if not isinstance(evidence, list) or any(e not in EVIDENCE_KINDS for e in evidence):
        raise ConfigError(f"{where}.evidence must be a list of {', '.join(EVIDENCE_KINDS)}; "
                          f"got {evidence!r}")
    approvals = entry.get("approvals", 0)
    if type(approvals) is not int or approvals < 0:
        raise ConfigError(f"{where}.approvals must be a whole number >= 0; got {approvals!r}")
    return {"evidence": cast(list[EvidenceKind], list(evidence)), "approvals": approvals}
