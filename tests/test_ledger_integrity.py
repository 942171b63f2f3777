"""The promotion ledger notices tampering, and names are compared as people, not bytes.

The ledger's hash chain is checked on a real file (each kind of break: an edited field on
any line, the last included, a deleted or swapped line, a forged line reusing a sequence
number, a line that is no JSON, no object or no entry, a line without the chain's fields),
old unchained ledgers keep reading; then the real CLI over a real MLflow registry:
``models history`` and ``audit`` exit 1 on a break, a promotion refuses to write after
one, a whole-chain rewrite is caught by ``audit`` against MLflow's copy, and ``--user``
spellings of the proposer (case, spaces, full-width) do not count as a second person while
empty and control-character names are refused (exit 2).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import cli
from nbops.errors import PromotionBlocked, UsageError
from nbops.tracking import ledger
from nbops.util.identity import checked, current_user, same_person


def _three(tmp: Path) -> list[str]:
    ledger.append(tmp, "m", "proposal", "champion", 1, who="alice")
    ledger.append(tmp, "m", "approval", "champion", 1, who="bob")
    ledger.append(tmp, "m", "move", "champion", 1, who="alice", reason="promoted")
    lines: list[str] = ledger.path_of(tmp, "m").read_text().splitlines(keepends=True)
    return lines


def _kinds(tmp: Path) -> list[tuple[int, str]]:
    return [(b["line"], b["kind"]) for b in ledger.read(tmp, "m")["breaks"]]


def test_an_intact_chain_reads_clean_and_each_line_hashes_the_one_before(
        tmp_path: Path) -> None:
    lines = _three(tmp_path)
    state = ledger.read(tmp_path, "m")
    assert state["breaks"] == [] and state["legacy"] == 0
    assert [e["seq"] for e in state["entries"]] == [1, 2, 3]
    second = json.loads(lines[1])
    assert second["prev_sha256"] == hashlib.sha256(lines[0].encode()).hexdigest()
    assert json.loads(lines[0])["prev_sha256"] is None


@pytest.mark.parametrize(("change", "expected"), [
    (lambda ls: [ls[0], ls[1].replace('"bob"', '"carol"'), ls[2]], [(2, "edited")]),
    (lambda ls: [ls[0], ls[1], ls[2].replace('"alice"', '"eve"')], [(3, "edited")]),
    (lambda ls: [ls[0].replace('"proposal"', '"approval"'), ls[1], ls[2]], [(1, "edited")]),
    (lambda ls: [ls[0], ls[2]], [(2, "deleted or swapped")]),
    (lambda ls: [ls[1], ls[2]], [(1, "deleted or swapped")]),
    (lambda ls: [ls[0], ls[2], ls[1]], [(2, "deleted or swapped"), (3, "deleted or swapped")]),
    (lambda ls: [*ls, ls[1].replace('"bob"', '"mallory"')], [(4, "duplicate sequence")]),
    (lambda ls: [*ls, ls[1]], [(4, "duplicate sequence")]),
    (lambda ls: [*ls, "garbage\n"], [(4, "not JSON")]),
    (lambda ls: [ls[0], "[1, 2]\n", ls[1], ls[2]], [(2, "not an object")]),
    (lambda ls: [*ls, '"alice"\n'], [(4, "not an object")]),
    (lambda ls: [*ls, "null\n"], [(4, "not an object")]),
    (lambda ls: [*ls, '{"seq": 4}\n'], [(4, "not an entry")]),
    (lambda ls: [*ls, ls[2].replace('"version": 1', '"version": "1"')], [(4, "not an entry")]),
    (lambda ls: [*ls, json.dumps({**{k: v for k, v in json.loads(ls[2]).items()
                                     if k not in ("sha256", "prev_sha256")}, "seq": 4})
                 + "\n"], [(4, "unchained")]),
    (lambda ls: [ls[0], ls[1].replace(", ", ",  ", 1), ls[2]], [(3, "edited")]),
])
def test_every_kind_of_tampering_is_a_break_named_by_line_and_kind(
        tmp_path: Path, change: Any, expected: list[tuple[int, str]]) -> None:
    lines = _three(tmp_path)
    ledger.path_of(tmp_path, "m").write_text("".join(change(lines)))
    assert _kinds(tmp_path) == expected
    with pytest.raises(PromotionBlocked, match=f"broken at line {expected[0][0]}"):
        ledger.append(tmp_path, "m", "approval", "champion", 1, who="carol")
    assert len(ledger.path_of(tmp_path, "m").read_text().splitlines()) == len(change(lines))


def test_an_old_unchained_ledger_reads_as_legacy_and_the_chain_starts_after_it(
        tmp_path: Path) -> None:
    old: list[dict[str, Any]] = [{
        "seq": i, "at": "2026-01-01T00:00:00+00:00", "kind": "move", "model": "m",
        "alias": "champion", "version": i, "previous": i - 1 or None, "who": "alice",
        "reason": "", "evidence": []} for i in (1, 2)]
    path = ledger.path_of(tmp_path, "m")
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in old))
    state = ledger.read(tmp_path, "m")
    assert state["legacy"] == 2 and state["breaks"] == []
    entry = ledger.append(tmp_path, "m", "move", "champion", 3, previous=2, who="bob")
    assert entry["seq"] == 3 and "legacy_sha256" in entry
    assert ledger.read(tmp_path, "m")["breaks"] == []
    # from now on the legacy lines are covered: editing one is a break
    path.write_text(path.read_text().replace('"who": "alice"', '"who": "eve"', 1))
    assert _kinds(tmp_path) == [(3, "edited")]


def test_a_torn_tail_is_cut_off_by_the_next_append_and_the_chain_holds(
        tmp_path: Path) -> None:
    _three(tmp_path)
    with ledger.path_of(tmp_path, "m").open("a") as handle:
        handle.write('{"seq": 4, "at": "2026')
    assert ledger.read(tmp_path, "m")["torn"] and _kinds(tmp_path) == []
    assert ledger.append(tmp_path, "m", "move", "champion", 2, previous=1)["seq"] == 4
    state = ledger.read(tmp_path, "m")
    assert not state["torn"] and state["breaks"] == [] and len(state["entries"]) == 4


@pytest.mark.parametrize("name", ["ALICE", "alice ", " Alice", "ａｌｉｃｅ", "aLiCe"])
def test_spellings_of_one_name_are_one_person(name: str) -> None:
    assert same_person(name, "alice")
    assert not same_person(name, "alicia")


@pytest.mark.parametrize("name", ["", " ", "\t\n", "al\nice", "al\u202eice", "a\x00",
                                  "bob\u200b", "x" * 201])
def test_empty_whitespace_control_and_overlong_names_are_refused(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError):
        checked(name)
    with pytest.raises(UsageError):
        ledger.append(Path("/nonexistent"), "m", "approval", "champion", 1, who=name)
    if name:  # the variable: empty counts as unset (the login name), the rest is refused
        monkeypatch.setenv("NBOPS_USER", name.replace("\x00", "\x01"))
        with pytest.raises(UsageError):
            current_user()


def test_one_current_user_for_the_ledger_and_the_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nbops.records.lifecycle import make_origin

    monkeypatch.setenv("NBOPS_USER", "  Bob ")
    assert current_user() == "Bob" and make_origin("cli")["user"] == "Bob"
    monkeypatch.setenv("NBOPS_USER", "")  # empty: unset, the login name
    assert current_user() == make_origin("cli")["user"] != ""


# -- the CLI over a real MLflow registry ------------------------------------------------

def _project(tmp: Path) -> Path:
    from mlflow.tracking import MlflowClient

    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    runs = tmp / "runs"
    uri = default_uri(runs)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    for _ in range(2):
        registry.register_version("m", run_id=run_id, artifact_path="models/model", tags={},
                                  alias=None, tracking_uri=uri)
    (tmp / "nbops.yaml").write_text("promotion:\n  champion:\n    approvals: 1\n")
    return runs


def _nbops(tmp: Path, *args: str, user: str = "alice") -> Any:
    return cli(*args, "--runs-dir", str(tmp / "runs"), cwd=tmp,
               env={"NBOPS_USER": user, "MLFLOW_TRACKING_URI": ""})


@pytest.mark.slow
def test_the_proposer_under_another_spelling_is_no_second_person(tmp_path: Path) -> None:
    _project(tmp_path)
    assert _nbops(tmp_path, "models", "promote", "m", "1").returncode == 1  # proposal
    for name in ("ALICE", "alice ", "ａｌｉｃｅ"):
        own = _nbops(tmp_path, "models", "approve", "m", "1", "--user", name)
        assert own.returncode == 1 and "cannot approve" in own.stderr, (name, own.stderr)
    for name in ("", "  ", "al\u202eice"):
        bad = _nbops(tmp_path, "models", "approve", "m", "1", "--user", name)
        assert bad.returncode == 2 and "--user" in bad.stderr, (name, bad.stderr)
        assert "Traceback" not in bad.stderr
    still = _nbops(tmp_path, "models", "promote", "m", "1")
    assert still.returncode == 1 and "approvals: 0 of 1" in still.stderr
    assert _nbops(tmp_path, "models", "approve", "m", "1", user="bob").returncode == 0
    assert _nbops(tmp_path, "models", "promote", "m", "1").returncode == 0


@pytest.mark.slow
def test_history_and_audit_report_a_break_and_promotions_refuse_to_write(
        tmp_path: Path) -> None:
    _project(tmp_path)
    assert _nbops(tmp_path, "models", "promote", "m", "1").returncode == 1
    assert _nbops(tmp_path, "models", "approve", "m", "1", user="bob").returncode == 0
    assert _nbops(tmp_path, "models", "promote", "m", "1").returncode == 0
    for version in ("1", "2"):  # an alias without a policy: two moves, one to roll back
        assert _nbops(tmp_path, "models", "promote", "m", version, "--alias", "c").returncode == 0
    path = ledger.path_of(tmp_path / "runs", "m")
    good = path.read_text()
    assert _nbops(tmp_path, "audit", "m").returncode == 0
    path.write_text(good.replace('"who": "bob"', '"who": "carol"'))
    shown = _nbops(tmp_path, "models", "history", "m")
    assert shown.returncode == 1 and "ledger line 2: edited" in shown.stdout
    assert "carol" in shown.stdout  # what can be read is still shown
    rows = json.loads(_nbops(tmp_path, "models", "history", "m", "--json").stdout)
    assert [r["kind"] for r in rows] == ["proposal", "approval", "move", "move", "move",
                                         "broken"]
    audited = _nbops(tmp_path, "audit", "m")
    assert audited.returncode == 1 and "LEDGER BROKEN at line 2: edited" in audited.stdout
    refused = _nbops(tmp_path, "models", "promote", "m", "2")
    assert refused.returncode == 1 and "broken at line 2" in refused.stderr
    assert "move it aside" in refused.stderr and "Traceback" not in refused.stderr
    back = _nbops(tmp_path, "models", "rollback", "m", "--alias", "c")
    assert back.returncode == 1 and "broken at line 2" in back.stderr
    approval = _nbops(tmp_path, "models", "approve", "m", "1", user="dave")
    assert approval.returncode == 1 and "broken at line 2" in approval.stderr
    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    uri = default_uri(tmp_path / "runs")
    with pytest.raises(PromotionBlocked, match="broken at line 2"):  # the register stage's
        registry.register_version("m", run_id=registry.get_version("m", 1, uri)["run_id"],
                                  artifact_path="models/model", tags={}, alias="challenger",
                                  tracking_uri=uri)
    assert path.read_text() == good.replace('"who": "bob"', '"who": "carol"')
    aliases = json.loads(_nbops(tmp_path, "models", "ls", "--json").stdout)[0]["aliases"]
    assert aliases == {"champion": 1, "c": 2}  # nothing moved
    path.write_text(good + "[1]\n")
    listed = _nbops(tmp_path, "models", "history", "m")
    assert listed.returncode == 1 and "ledger line 6: not an object" in listed.stdout
    assert "Traceback" not in listed.stderr
    # a ledger from before the chain: read as legacy, said once, no break
    path.write_text("".join(json.dumps({k: v for k, v in json.loads(raw).items()
                                        if k not in ("sha256", "prev_sha256")}) + "\n"
                            for raw in good.splitlines()))
    legacy = _nbops(tmp_path, "models", "history", "m")
    assert legacy.returncode == 0 and legacy.stderr.count("predate its hash chain") == 1
    assert "first 5 line(s)" in legacy.stderr and "BROKEN" not in legacy.stdout
    # someone who rewrites the whole chain: MLflow's copy of the move disagrees
    lines, prev, out = good.splitlines(keepends=True), None, []
    for raw in lines:
        entry = json.loads(raw)
        if entry["kind"] == "move":
            entry["who"] = "eve"
        entry["prev_sha256"] = prev
        entry["sha256"] = ledger._self_hash({k: v for k, v in entry.items() if k != "sha256"})
        text = json.dumps(entry, sort_keys=True) + "\n"
        out.append(text)
        prev = hashlib.sha256(text.encode()).hexdigest()
    path.write_text("".join(out))
    assert _nbops(tmp_path, "models", "history", "m").returncode == 0  # the chain holds
    rewritten = _nbops(tmp_path, "audit", "m")
    assert rewritten.returncode == 1 and "LEDGER DIFFERS FROM MLFLOW" in rewritten.stdout
    assert "'alice'" in rewritten.stdout
