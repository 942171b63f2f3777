"""Promote, approve, roll back, and read the registry as people need it.

Promotion: the alias's policy (``policy``) names the evidence a version needs and how many
approvals; :func:`promote` gathers the evidence (``evidence``), counts the approvals of
the open proposal that saw the same evidence, and either moves the alias through
``tracking.registry`` (ledger, compare-and-set) or records a proposal and raises
``PromotionBlocked`` saying what is missing and what to run next. An approval counts only
from someone other than the proposer, and only while the evidence it saw is unchanged.

Promoting a version to the alias it already holds is no move: nothing is checked, proposed
or recorded, and the result says so (``Decision.moved`` is False).

A rollback is an emergency action: it needs no evidence or approval, and is recorded like
any move.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from ..errors import NbopsError, PromotionBlocked
from ..records.queries import get_record
from ..tracking import ledger, registry
from ..tracking.uri import resolve_uri
from ..util.envvars import current_runs_dir
from ..util.identity import current_user, key, same_person
from .evidence import Evidence, evidence_for
from .policy import AliasPolicy, load_policy


class Where(TypedDict):
    runs_dir: Path
    tracking_uri: str
    ledger_dir: Path


def where(runs_dir: str | Path | None = None, tracking_uri: str | None = None) -> Where:
    """The runs folder, registry and ledger to use: as given, else the run's (inside a
    kernel), else ``$NBOPS_RUNS_DIR`` / ``./runs``."""
    runs = current_runs_dir(runs_dir)
    uri = resolve_uri(tracking_uri, runs)
    return {"runs_dir": runs, "tracking_uri": uri, "ledger_dir": ledger.home(uri)}


class Decision(TypedDict):
    """Where a promotion stands: evidence found, approvals counted, what is missing.

    ``moved`` is False when the alias already pointed at the version: then nothing was
    recorded, and the policy was not applied (``evidence`` and ``missing`` are empty)."""

    moved: bool
    policy: AliasPolicy
    evidence: list[Evidence]
    usable: list[str]  # run ids of the evidence the policy accepts
    proposer: str | None
    approvers: list[str]
    missing: list[str]


def decide(model: str, version: int, alias: str, place: Where, who: str,
           config: Path | None = None) -> Decision:
    policy = load_policy(alias, config)
    evidence = evidence_for(model, version, place["runs_dir"], place["tracking_uri"])
    wanted = policy["evidence"]
    usable = sorted(e["run_id"] for e in evidence if not wanted or e["kind"] in wanted)
    missing = []
    if wanted and not usable:
        missing.append(f"evidence for v{version}: one of {', '.join(wanted)} (found "
                       f"{', '.join(e['kind'] for e in evidence) or 'none'}; run the evaluate"
                       " or ab_evaluate stage for it)")
    pending = _moves_since(model, alias, place)  # the ledger, read once
    proposal = _open_proposal(pending, version)
    proposer = proposal["who"] if proposal else None
    counted = {key(e["who"]): e["who"] for e in _approvals(pending, version, proposal)
               if e["evidence"] == usable and not same_person(e["who"], proposer or who)}
    approvers = sorted(counted.values())  # one per person, however they spelled the name
    if len(approvers) < policy["approvals"]:
        missing.append(f"approvals: {len(approvers)} of {policy['approvals']} (others than "
                       f"the proposer run: nbops models approve {model} {version} --alias "
                       f"{alias})")
    return {"moved": False, "policy": policy, "evidence": evidence, "usable": usable,
            "proposer": proposer, "approvers": approvers, "missing": missing}


def promote(model: str, version: int, alias: str = "champion", *, reason: str = "",
            who: str | None = None, expected: int | None = None,
            runs_dir: str | Path | None = None, tracking_uri: str | None = None,
            config: Path | None = None) -> Decision:
    """Move ``alias`` to ``version`` if the policy allows; else propose and raise.

    An alias already at ``version`` is left alone: nothing is recorded, and the returned
    decision has ``moved`` False (unless ``expected`` names another version: then the
    compare-and-set fails as for any move).

    Raises:
        PromotionBlocked: evidence or approvals missing (a proposal is recorded), the
            alias is not at ``expected`` any more, or the ledger is broken.
    """
    place = where(runs_dir, tracking_uri)
    actor = current_user(who)
    registry.get_version(model, version, place["tracking_uri"])  # unknown → RegistryError
    ledger.ensure_intact(place["ledger_dir"], model)  # a broken ledger: nothing more
    if expected in (None, version) and registry.current_target(
            model, alias, place["tracking_uri"]) == version:
        return {"moved": False, "policy": load_policy(alias, config), "evidence": [],
                "usable": [], "proposer": None, "approvers": [], "missing": []}
    decision = decide(model, version, alias, place, actor, config)
    if decision["missing"]:
        if decision["proposer"] is None:
            ledger.append(place["ledger_dir"], model, "proposal", alias, version, who=actor,
                          reason=reason, evidence=decision["usable"])
        raise PromotionBlocked(f"not promoting {model} v{version} to {alias!r} yet; missing: "
                               + "; ".join(decision["missing"]) + ". Proposal recorded "
                               f"(nbops models history {model}).")
    decision["moved"] = registry.promote(  # False: it got there meanwhile (checked locked)
        model, version, alias, reason=reason or "promoted", tracking_uri=place["tracking_uri"],
        expected=expected, evidence=decision["usable"], who=actor)
    return decision


def approve(model: str, version: int, alias: str = "champion", *, who: str | None = None,
            reason: str = "", runs_dir: str | Path | None = None,
            tracking_uri: str | None = None, config: Path | None = None
            ) -> ledger.LedgerEntry:
    """Approve the open proposal to move ``alias`` to ``version``.

    Raises:
        PromotionBlocked: no open proposal, the proposer approving their own (names
            compared by ``identity.same_person``), or a broken ledger.
    """
    place = where(runs_dir, tracking_uri)
    actor = current_user(who)
    ledger.ensure_intact(place["ledger_dir"], model)  # a broken ledger: nothing more
    proposal = _open_proposal(_moves_since(model, alias, place), version)
    if proposal is None:
        raise PromotionBlocked(f"no open proposal to move {alias!r} of {model} to v{version}: "
                               f"propose it first (nbops models promote {model} {version} "
                               f"--alias {alias})")
    if same_person(proposal["who"], actor):
        raise PromotionBlocked(f"{proposal['who']} proposed this promotion and cannot "
                               f"approve it (as {actor!r}: names are compared ignoring case, "
                               "width and surrounding spaces); another person has to")
    decision = decide(model, version, alias, place, actor, config)
    return ledger.append(place["ledger_dir"], model, "approval", alias, version, who=actor,
                         reason=reason, evidence=decision["usable"])


def rollback(model: str, alias: str = "champion", *, reason: str = "",
             who: str | None = None, runs_dir: str | Path | None = None,
             tracking_uri: str | None = None) -> int:
    place = where(runs_dir, tracking_uri)
    return registry.rollback(model, alias, reason=reason, tracking_uri=place["tracking_uri"],
                             who=who)


class HistoryRow(TypedDict):
    at: str
    kind: str  # move, proposal, approval, unrecorded (moved outside nbops), broken (ledger)
    alias: str
    version: int | None
    previous: int | None
    who: str
    reason: str
    evidence: list[str]


def history(model: str, runs_dir: str | Path | None = None,
            tracking_uri: str | None = None) -> list[HistoryRow]:
    """Every recorded event, oldest first; a ``broken`` row for each break of the ledger's
    chain (``reason``: the line, its kind and what is wrong); and for each alias whose
    current target differs from the last recorded move, an ``unrecorded`` row (moved
    outside nbops)."""
    place = where(runs_dir, tracking_uri)
    state = ledger.read(place["ledger_dir"], model)
    entries = state["entries"]
    rows: list[HistoryRow] = [{"at": e["at"], "kind": e["kind"], "alias": e["alias"],
                               "version": e["version"], "previous": e["previous"],
                               "who": e["who"], "reason": e["reason"],
                               "evidence": e["evidence"]} for e in entries]
    rows += [{"at": "", "kind": "broken", "alias": "", "version": None, "previous": None,
              "who": "?", "reason": describe_break(b), "evidence": []}
             for b in state["breaks"]]
    last = {e["alias"]: e["version"] for e in entries if e["kind"] == "move"}
    current = next((m["aliases"] for m in registry.list_models(place["tracking_uri"])
                    if m["name"] == model), {})
    for alias in sorted(set(last) | set(current)):
        if current.get(alias) != last.get(alias):
            rows.append({"at": "", "kind": "unrecorded", "alias": alias,
                         "version": current.get(alias), "previous": last.get(alias),
                         "who": "?", "reason": "moved outside nbops (not in the ledger)",
                         "evidence": []})
    return rows


def describe_break(found: ledger.Break) -> str:
    return f"ledger line {found['line']}: {found['kind']} ({found['detail']})"


def ledger_state(model: str, runs_dir: str | Path | None = None,
                 tracking_uri: str | None = None) -> ledger.Ledger:
    """The model's ledger as read and checked (entries, legacy lines, torn tail, breaks)."""
    return ledger.read(where(runs_dir, tracking_uri)["ledger_dir"], model)


def _moves_since(model: str, alias: str, place: Where) -> list[ledger.LedgerEntry]:
    entries = ledger.read(place["ledger_dir"], model)["entries"]
    last_move = max((i for i, e in enumerate(entries)
                     if e["kind"] == "move" and e["alias"] == alias), default=-1)
    return entries[last_move + 1:]


def _open_proposal(pending: list[ledger.LedgerEntry], version: int
                   ) -> ledger.LedgerEntry | None:
    """The first proposal for ``version`` among the events since the alias last moved."""
    proposals = [e for e in pending if e["kind"] == "proposal" and e["version"] == version]
    return proposals[0] if proposals else None


def _approvals(pending: list[ledger.LedgerEntry], version: int,
               proposal: ledger.LedgerEntry | None) -> list[ledger.LedgerEntry]:
    if proposal is None:
        return []
    return [e for e in pending if e["kind"] == "approval" and e["version"] == version
            and e["seq"] > proposal["seq"]]


class VersionView(TypedDict):
    """One version as ``models show`` presents it."""

    version: int
    aliases: list[str]
    model_path: str | None
    lineage: dict[str, str]  # train_run, evaluate_run, register_run
    metrics: dict[str, Any]  # of the evaluate run, with its verdict


def describe(model: str, runs_dir: str | Path | None = None,
             tracking_uri: str | None = None) -> list[VersionView]:
    """Every version of ``model`` with its aliases, lineage and evaluation metrics."""
    place = where(runs_dir, tracking_uri)
    views: list[VersionView] = []
    for version in registry.list_versions(model, place["tracking_uri"]):
        tags = version["tags"]
        lineage = {key.removeprefix("nbops."): tags[key] for key in
                   ("nbops.train_run", "nbops.evaluate_run", "nbops.register_run")
                   if tags.get(key)}
        metrics: dict[str, Any] = {}
        evaluate = tags.get("nbops.evaluate_run")
        if evaluate:
            try:
                record = get_record(evaluate, place["runs_dir"])
                metrics = {**record["metrics"], "verdict": record["outputs"].get("verdict")}
            except NbopsError:
                metrics = {"note": f"evaluate run {evaluate} is not in this runs folder"}
        views.append({"version": version["version"], "aliases": version["aliases"],
                      "model_path": tags.get("nbops.model_path"), "lineage": lineage,
                      "metrics": metrics})
    return views
