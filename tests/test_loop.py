"""The closed loop: policy, decisions under limits, coalesced schedule (pure), and ticks on a
real prediction log with real monitor runs, a real retrain pipeline and MLflow registry,
the lease, the reference rotation and the history."""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from filelock import FileLock

from conftest import NOTEBOOKS, cli
from nbops.errors import ConfigError
from nbops.loop.config import LoopConfig, parse, seconds
from nbops.loop.decide import Facts, decide
from nbops.loop.performance import live_accuracy
from nbops.loop.schedule import plan
from nbops.loop.trial import Trial, blocking, carried, judge, labelled_rows, opened
from nbops.serving.predlog import PredictionLog, log_folder

NOW = 1_800_000_000.0


def config(tmp_path: Path, **loop: Any) -> LoopConfig:
    (tmp_path / "retrain.yaml").write_text("name: r\nstages: {}\n")
    return parse({"model": "m", "retrain": "retrain.yaml", **loop}, tmp_path)


def facts(**given: Any) -> Facts:
    base: Facts = {"now": NOW, "new_rows": 500, "drift_action": None, "drift_share": None,
                   "model_age_s": None, "retrains": [], "interrupted": [], "trial": None,
                   "accuracy": None, "expected_accuracy": None, "labelled_rows": 0}
    return {**base, **given}  # type: ignore[typeddict-item]


def test_policy_defaults_and_bad_values(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert (cfg.min_new_rows, cfg.cooldown_s, cfg.max_per_day, cfg.dry_run, cfg.drift) == (
        100, 3600.0, 3, False, True)
    assert cfg.experiment == cfg.retrain == (tmp_path / "retrain.yaml").resolve()
    assert seconds("90s", "x") == 90 and seconds("1.5h", "x") == 5400
    for bad, message in [({"limits": {"cooldown": "soon"}}, "not a duration"),
                         ({"limits": {"max_per_day": -1}}, "whole number"),
                         ({"triggers": {"drift": "yes"}}, "true or false"),
                         ({"trigers": {}}, "unknown key"),
                         ({"triggers": {"min_rows": 5}}, "unknown key"),
                         ({"experiment": "nope.yaml"}, "does not exist")]:
        with pytest.raises(ConfigError, match=message):
            config(tmp_path, **bad)
    with pytest.raises(ConfigError, match="loop.model"):
        parse({"retrain": "retrain.yaml"}, tmp_path)


def test_decisions_follow_the_tiers_then_age_and_schedule(tmp_path: Path) -> None:
    cfg = config(tmp_path, triggers={"max_model_age": "7d", "schedule": "30d"})
    assert decide(cfg, facts(drift_action="experiment", drift_share=0.2))["action"] == \
        "experiment"
    moderate = decide(cfg, facts(drift_action="retrain", drift_share=0.07))
    assert (moderate["action"], moderate["cause"], moderate["blocked"]) == (
        "retrain", "drift", None)
    assert "7.0% of features drifted" in moderate["reason"]
    assert decide(cfg, facts(drift_action="warn", retrains=[NOW - 86400]))["action"] == "none"
    old = decide(cfg, facts(drift_action="none", model_age_s=8 * 86400,
                            retrains=[NOW - 86400]))
    assert (old["action"], old["cause"]) == ("retrain", "age")
    due = decide(cfg, facts(retrains=[NOW - 31 * 86400], new_rows=0))
    assert (due["action"], due["cause"]) == ("retrain", "schedule")
    waiting = decide(config(tmp_path), facts(new_rows=3))
    assert waiting["action"] == "none" and "waiting for data: 3 new rows" in waiting["reason"]
    off = config(tmp_path, triggers={"drift": False})
    assert decide(off, facts(drift_action="retrain"))["action"] == "none"


def test_a_drop_in_live_accuracy_retrains_once_enough_labels_arrived(tmp_path: Path) -> None:
    cfg = config(tmp_path, triggers={"accuracy_drop": 0.05, "accuracy_rows": 40})
    assert (cfg.accuracy_drop, cfg.accuracy_rows, cfg.accuracy_window_s) == (0.05, 40, None)
    assert config(tmp_path, triggers={"accuracy_drop": 0.1, "accuracy_window": "7d"}
                  ).accuracy_window_s == 7 * 86400
    assert config(tmp_path).accuracy_drop is None  # not watched unless asked for
    with pytest.raises(ConfigError, match="accuracy_drop must be a number between 0 and 1"):
        config(tmp_path, triggers={"accuracy_drop": 5})
    low = {"accuracy": 0.88, "expected_accuracy": 0.95}
    dropped = decide(cfg, facts(**low, labelled_rows=40, drift_action="none"))
    assert (dropped["action"], dropped["cause"]) == ("retrain", "performance")
    assert "accuracy 0.880 on 40 labelled rows" in dropped["reason"]
    assert decide(cfg, facts(**low, labelled_rows=39))["action"] == "none"  # too few yet
    near = {"accuracy": 0.92, "expected_accuracy": 0.95, "labelled_rows": 400}
    assert decide(cfg, facts(**near))["action"] == "none"  # within the allowed drop
    # drift tiers come first: large drift still goes back to experimentation
    assert decide(cfg, facts(**low, labelled_rows=40, drift_action="experiment"))[
        "cause"] == "drift"
    # measured on the rows the champion version answered, with the labels there are now
    runs = tmp_path / "runs"
    log = PredictionLog(log_folder(runs, "m"))
    at = datetime.now(timezone.utc).isoformat()
    for variant, version, wrong in (("champion", 1, 2), ("shadow", 2, 0), ("champion", 3, 0)):
        log.append([{"request_id": f"{variant}{version}-{i}", "row": 0, "time": at,
                     "model": "m", "version": version, "variant": variant, "latency_ms": 1.0,
                     "inputs": {"x": i}, "prediction": 0 if i < wrong else 1}
                    for i in range(10)])
    log.close()
    labels = pd.DataFrame({"request_id": [f"champion1-{i}" for i in range(8)],
                           "target": [1] * 8})  # two rows' labels have not arrived
    assert live_accuracy(log_folder(runs, "m"), labels, "target", 1, None) == (8, 0.75)
    assert live_accuracy(log_folder(runs, "m"), labels, "target", 1, "2999-01-01") == (0, None)
    assert live_accuracy(log_folder(runs, "m"), None, "target", 1, None) == (0, None)


def test_limits_block_with_their_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path, limits={"cooldown": "1h", "max_per_day": 2})
    drift = {"drift_action": "retrain", "drift_share": 0.06}
    assert "cooldown" in str(decide(cfg, facts(**drift, retrains=[NOW - 600]))["blocked"])
    day = decide(cfg, facts(**drift, retrains=[NOW - 20000, NOW - 7200]))
    assert day["action"] == "retrain" and "daily limit: 2 retrains" in str(day["blocked"])
    assert decide(cfg, facts(**drift, retrains=[NOW - 90000, NOW - 7200]))["blocked"] is None
    # a retrain whose tick was killed: the daily limit counts it, the cooldown does not
    killed = decide(cfg, facts(**drift, interrupted=[NOW - 600]))
    assert (killed["action"], killed["blocked"]) == ("retrain", None)
    both = decide(cfg, facts(**drift, retrains=[NOW - 7200], interrupted=[NOW - 600]))
    assert "daily limit: 2 retrains in the last 24 h (max 2, 1 of them killed before they " \
        "ended)" == both["blocked"]
    sched = config(tmp_path, triggers={"schedule": "1d"})
    assert decide(sched, facts(interrupted=[NOW - 600]))["cause"] == "schedule"
    dry = config(tmp_path, limits={"dry_run": True})
    assert "dry run" in str(decide(dry, facts(**drift))["blocked"])


def test_a_challenger_on_trial_holds_retrains_back_and_its_test_decides(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, challenger={"min_labelled": 50, "max_labelled": 400})
    assert (cfg.trial_min_labelled, cfg.trial_max_labelled, cfg.trial_alpha,
            cfg.trial_margin) == (50, 400, 0.05, 0.01)
    for bad, message in [({"min_labelled": 0}, "min_labelled <= max_labelled"),
                         ({"min_labelled": 500, "max_labelled": 400}, "<= max_labelled"),
                         ({"alpha": 1.5}, "between 0 and 1"), ({"alpha": True}, "between"),
                         ({"rows": 5}, "unknown key")]:
        with pytest.raises(ConfigError, match=message):
            config(tmp_path, challenger=bad)
    # the A/B decision, read for the trial
    assert judge("win", "challenger better (p = 0.001)", 120, cfg)[0] == "promote"
    assert judge("equivalent", "difference within ±0.01", 120, cfg)[0] == "refuse"
    assert judge("inconclusive", "challenger worse (p = 0.01)", 120, cfg)[0] == "refuse"
    assert judge("inconclusive", "guardrail failed: latency_p95", 60, cfg)[0] == "refuse"
    waiting = judge("inconclusive", "not enough evidence", 120, cfg)
    assert waiting[0] == "wait" and "inconclusive" in waiting[1]
    spent = judge("inconclusive", "not enough evidence", 400, cfg)
    assert spent[0] == "refuse" and "no win after 400 labelled rows" in spent[1]
    # carried from cycle to cycle while open; a closed one is never reopened
    trial = opened(2, 1, "2026-12-02T00:00:00+00:00", "cycle-a")
    cycles: list[Any] = [{"trial": None}, {"trial": trial}, {"trial": None}]
    assert carried(cycles) == trial and carried(cycles) is not trial  # a copy to work on
    assert carried([*cycles, {"trial": {**trial, "status": "refused"}}]) is None
    assert carried([{"trial": {**trial, "status": "awaiting_approval"}}]) is not None
    # while it stands, drift does not start another retrain (limits would allow it)
    block = blocking(trial)
    assert block == "challenger v2 is on trial (open)"
    held = decide(cfg, facts(drift_action="retrain", drift_share=0.1, trial=block))
    assert (held["action"], held["blocked"]) == ("retrain", block)
    for closed in ("promoted", "refused", "superseded"):  # closed by this cycle: next one
        assert f"challenger v2 was {closed} in this cycle" == blocking({**trial, "status": closed})
    assert blocking(None) is None
    # the rows a trial counts: answered by its version as the shadow (paired) or as the
    # challenger (split traffic), with a label; never the champion's or another version's
    runs = tmp_path / "runs"
    log = PredictionLog(log_folder(runs, "m"))
    at = datetime.now(timezone.utc).isoformat()
    for variant, version, count in (("champion", 1, 9), ("challenger", 2, 5),
                                    ("shadow", 2, 4), ("challenger", 3, 7)):
        log.append([{"request_id": f"{variant}{version}-{i}", "row": 0, "time": at,
                     "model": "m", "version": version, "variant": variant, "latency_ms": 1.0,
                     "inputs": {"x": i}, "prediction": 1} for i in range(count)])
    log.close()
    ids = [f"{v}-{i}" for v in ("champion1", "challenger2", "shadow2", "challenger3")
           for i in range(9)]
    labels = pd.DataFrame({"request_id": ids[:-1], "target": 1})  # one label is late
    assert labelled_rows(log_folder(runs, "m"), labels, "target", "", 2) == 9
    assert labelled_rows(log_folder(runs, "m"), labels, "target", "", 3) == 7
    assert labelled_rows(log_folder(runs, "m"), labels, "target", "2999-01-01/", 2) == 0
    assert labelled_rows(log_folder(runs, "m"), None, "target", "", 2) == 0


def test_missed_slots_are_coalesced_into_one_tick() -> None:
    assert plan(0.0, 10.0, -1, 0.0) == (0, 0.0, 0)  # the first tick at once
    assert plan(0.0, 10.0, 0, 3.0) == (1, 10.0, 0)  # on time: wait for the next slot
    assert plan(0.0, 10.0, 0, 35.0) == (3, 35.0, 2)  # overran slots 1 and 2: one tick now
    assert plan(0.0, 10.0, 3, 36.0) == (4, 40.0, 0)  # then back on the schedule
    assert plan(0.0, 3600.0, 0, 86400.0 + 5) == (24, 86405.0, 23)  # a day asleep: one tick
    with pytest.raises(ValueError):
        plan(0.0, 0.0, 0, 1.0)


# --- ticks on a real project -------------------------------------------------------------

def serve(runs: Path, x: float, rows: int, batch: str) -> None:
    """Rows answered now, as the server's own log writer writes them."""
    log = PredictionLog(log_folder(runs, "m"))
    at = datetime.now(timezone.utc).isoformat()
    log.append([{"request_id": f"{batch}-{i}", "row": 0, "time": at, "model": "m", "version": 1,
                 "variant": "champion", "latency_ms": 1.0, "inputs": {"x": x},
                 "prediction": 0} for i in range(rows)])
    log.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump({"name": "retrain", "stages": {
        "prepare": {"template": str(NOTEBOOKS / "loop_prepare.ipynb")},
        "train": {"template": str(NOTEBOOKS / "fake_train.ipynb"), "after": ["prepare"]},
        "register": {"template": str(NOTEBOOKS / "loop_register.ipynb"),
                     "after": ["train"]}}}))
    pd.DataFrame({"x": [0.0] * 10, "target": [0] * 10}).to_parquet(
        tmp_path / "reference.parquet", index=False)
    (tmp_path / "labels").mkdir()
    (tmp_path / "nbops.yaml").write_text(yaml.safe_dump({"name": "p", "loop": {
        "model": "m", "retrain": "retrain.yaml", "reference": "reference.parquet",
        "monitor": {"template": str(NOTEBOOKS / "loop_monitor.ipynb")},
        "triggers": {"min_new_rows": 20}, "limits": {"cooldown": "1h"},
        "fresh_data": {"parameter": "prepare.data_path", "labels": "labels"}}}))
    return tmp_path


def loop(project: Path, *args: str) -> Any:
    return cli("loop", *args, cwd=project, env={"MLFLOW_TRACKING_URI": "",
                                                "NBOPS_RUNS_DIR": str(project / "runs")})


def last_cycle(project: Path) -> dict[str, Any]:
    done = loop(project, "history", "--json")
    assert done.returncode == 0, done.stderr
    cycles: list[dict[str, Any]] = json.loads(done.stdout)
    return cycles[-1]


@pytest.mark.slow
def test_ticks_watch_retrain_promote_rotate_and_respect_the_cooldown(project: Path) -> None:
    runs = project / "runs"
    serve(runs, 0.0, 50, "a")
    first = loop(project, "tick")
    assert first.returncode == 0, first.stdout + first.stderr
    cycle = last_cycle(project)
    assert cycle["window"]["rows"] == 50 and cycle["drift"] == {"action": "none", "share": 0.0}
    assert cycle["decision"]["action"] == "none" and cycle["pipeline_run"] is None
    assert cycle["reference"]["path"] == str((project / "reference.parquet").resolve())
    monitor = json.loads((runs / cycle["monitor_run"] / "run.json").read_text())
    assert monitor["origin"]["trigger"] == "loop" and monitor["origin"]["cycle"] == cycle["id"]
    assert monitor["outputs"]["rows"] == 50

    quiet = loop(project, "tick")  # nothing new: no monitor run, nothing to do
    assert quiet.returncode == 0 and "waiting for data: 0 new rows" in quiet.stdout
    assert last_cycle(project)["monitor_run"] is None

    serve(runs, 1.0, 10, "b0")  # the traffic drifts: too few rows to judge yet
    assert "waiting for data: 10 new rows" in loop(project, "tick").stdout
    serve(runs, 1.0, 20, "b")  # ... now 30 since the last judged window; 20 get labels
    pd.DataFrame({"request_id": [f"b-{i}" for i in range(20)], "target": [1] * 20}).to_csv(
        project / "labels" / "day1.csv", index=False)
    drifted = loop(project, "tick")
    assert drifted.returncode == 0, drifted.stdout + drifted.stderr
    cycle = last_cycle(project)
    assert cycle["window"]["rows"] == 30 and cycle["drift"]["action"] == "retrain"
    assert cycle["decision"]["cause"] == "drift" and cycle["decision"]["blocked"] is None
    outcome = cycle["outcome"]
    assert outcome == {"status": "succeeded", "version": 1, "champion_before": None,
                       "champion_after": 1, "promoted": True}
    # it trained on the reference plus the labelled traffic, recorded with its hash
    data = cycle["data"]
    assert (data["base_rows"], data["window_rows"], data["since"]) == (10, 20, None)
    assert data["until"] == cycle["window"]["end"]
    assert hashlib.sha256(Path(data["path"]).read_bytes()).hexdigest() == data["sha256"]
    pipeline = json.loads((runs / "pipelines" / f"{cycle['pipeline_run']}.json").read_text())
    prepared = json.loads((runs / pipeline["stages"]["prepare"]["run_id"] / "run.json")
                          .read_text())
    assert prepared["parameters"]["data_path"] == data["path"]
    assert (prepared["outputs"]["rows"], prepared["outputs"]["positives"]) == (30, 20)
    rotated = cycle["reference"]["rotated_to"]  # the traffic the new champion now faces
    assert pd.read_parquet(rotated).to_dict("list") == {"x": [1.0] * 30}
    trained = pipeline["stages"]["train"]["run_id"]
    origin = json.loads((runs / trained / "run.json").read_text())["origin"]
    assert origin["trigger"] == "loop" and origin["cycle"] == cycle["id"]
    assert "promoted: champion (none) -> v1" in drifted.stdout

    serve(runs, 1.0, 30, "c")  # still drifted, but the retrain was minutes ago
    cooled = loop(project, "tick")
    assert cooled.returncode == 0
    cycle = last_cycle(project)
    assert cycle["reference"]["path"] == rotated  # the monitor now uses the new reference
    assert cycle["decision"]["action"] == "retrain"
    assert "cooldown" in cycle["decision"]["blocked"] and cycle["pipeline_run"] is None

    history = loop(project, "history")
    lines = history.stdout.strip().splitlines()
    assert len(lines) == 5 and "registered v1, champion (none) -> v1" in lines[3]
    assert "blocked: cooldown" in lines[4]

    with FileLock(str(runs / "loop" / ".tick.lock")):  # a tick holds the lease
        busy = loop(project, "tick")
    assert busy.returncode == 0 and "another tick is running" in busy.stdout
    assert len(json.loads(loop(project, "history", "--json").stdout)) == 5


def test_a_project_without_a_loop_policy_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "nbops.yaml").write_text("name: p\n")
    done = cli("loop", "tick", cwd=tmp_path, env={"NBOPS_RUNS_DIR": str(tmp_path / "runs")})
    assert done.returncode == 2 and "no 'loop:' section" in done.stderr
    assert "Traceback" not in done.stderr
    run_every = cli("loop", "run", "--every", "soon", cwd=tmp_path)
    assert run_every.returncode == 2 and "not a duration" in run_every.stderr


def test_loop_run_ticks_on_its_schedule_and_stops(project: Path) -> None:
    start = time.monotonic()
    done = loop(project, "run", "--every", "2s", "--max-ticks", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("waiting for data: 0 new rows") == 2
    assert time.monotonic() - start >= 2.0  # the second tick waited for its slot


def test_fresh_data_appends_only_labelled_answered_rows_in_the_window(tmp_path: Path) -> None:
    from nbops.errors import NbopsError
    from nbops.loop.fresh import build

    runs = tmp_path / "runs"
    base = tmp_path / "base.parquet"
    pd.DataFrame({"x": [5.0, 6.0], "target": [0, 1]}).to_parquet(base, index=False)
    serve(runs, 1.0, 4, "a")
    log = PredictionLog(log_folder(runs, "m"))  # a shadow's copy of a-0 never counts twice
    log.append([{"request_id": "a-0", "row": 0, "time": datetime.now(timezone.utc).isoformat(),
                 "model": "m", "version": 2, "variant": "shadow", "latency_ms": 1.0,
                 "inputs": {"x": 1.0}, "prediction": 1}])
    log.close()
    labels = tmp_path / "labels"
    labels.mkdir()
    pd.DataFrame({"request_id": ["a-0", "a-1", "zz"], "target": [1, 0, 1]}).to_csv(
        labels / "one.csv", index=False)
    until = datetime.now(timezone.utc).isoformat()
    data = build(base=base, log=log_folder(runs, "m"), labels=labels, target="target",
                 since=None, until=until, out_dir=tmp_path / "out", name="c1")
    table = pd.read_parquet(data["path"])
    assert (data["base_rows"], data["window_rows"]) == (2, 2)
    assert table.to_dict("list") == {"x": [5.0, 6.0, 1.0, 1.0], "target": [0, 1, 1, 0]}
    later = build(base=base, log=log_folder(runs, "m"), labels=labels, target="target",
                  since=until, until=datetime.now(timezone.utc).isoformat(),
                  out_dir=tmp_path / "out", name="c2")
    assert later["window_rows"] == 0  # nothing logged since the last cut
    pd.DataFrame({"x": [1.0], "z": [2.0], "target": [0]}).to_parquet(base, index=False)
    with pytest.raises(NbopsError, match="lacks column"):
        build(base=base, log=log_folder(runs, "m"), labels=labels, target="target",
              since=None, until=until, out_dir=tmp_path / "out", name="c3")


@pytest.mark.slow
def test_demo_loop_retrains_then_experiments_and_promotes_through_ab_trials(
        tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    env = {"MLFLOW_TRACKING_URI": "", "NBOPS_RUNS_DIR": ""}
    done = cli("demo", "loop", "--dir", str(folder), "--shifts", "0,3,3,3,3",
               "--wider", "0,0,0,2,2", "--rows", "120", "--json", timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    rows = result["timeline"]
    assert [(r["shift"], r["wider"]) for r in rows] == [
        (0.0, 0.0), (3.0, 0.0), (3.0, 0.0), (3.0, 2.0), (3.0, 2.0)]  # traffic is seeded
    assert all(r["status"] == "succeeded" for r in rows)
    assert rows[0]["served_by"] == ["v1"] and rows[0]["action"] == "none"
    cycles = [json.loads(p.read_text()) for p in
              sorted((folder / "runs" / "loop" / "cycles").glob("*.json"))]
    # window 1: moderate drift retrains on fresh data; the policy (ab_win) holds v2 back
    assert rows[1]["action"] == "retrain" and rows[1]["registered"] == 2, rows
    assert rows[1]["promoted"] is None and "v2 on trial" in rows[1]["trial"], rows
    data = cycles[1]["data"]
    assert data["window_rows"] == 2 * 120 and data["base_rows"] > 0  # labelled traffic
    # the champion's accuracy on the labelled traffic is watched too (drift decided first)
    live = cycles[1]["performance"]
    assert (live["version"], live["rows"]) == (1, 2 * 120) and live["expected"] > 0.9
    assert live["accuracy"] < live["expected"]  # the shifted window costs it
    # window 2: v2 answered as the shadow; McNemar on the paired rows says win: promoted,
    # and no second retrain starts in the cycle that promoted it
    trial = cycles[2]["trial"]
    assert (trial["status"], trial["decision"]) == ("promoted", "win")
    # the shadow answers off the response path: its last rows may land after the tick began
    assert 110 <= trial["labelled"] <= 120
    assert trial["p_value"] < 0.05 and trial["test"].startswith("McNemar")
    assert rows[2]["promoted"] == "v1 -> v2" and rows[2]["reference_rotated"], rows
    assert rows[2]["retrain"] is None and "v2 was promoted" in rows[2]["decision"]
    ab = json.loads((folder / "runs" / trial["ab_run"] / "run.json").read_text())
    assert ab["origin"]["trigger"] == "loop" and ab["origin"]["cycle"] == cycles[2]["id"]
    assert ab["outputs"]["challenger_version"] == 2 and ab["outputs"]["champion_version"] == 1
    # window 3: six more features drift (large drift against the rotated reference): back
    # to experimentation, a sweep over model families on the fresh data; v3 goes on trial
    assert rows[3]["served_by"] == ["v2"] and rows[3]["action"] == "experiment", rows
    assert rows[3]["registered"] == 3 and "v3 on trial" in rows[3]["trial"], rows
    pipe = json.loads((folder / "runs" / "pipelines" /
                       f"{cycles[3]['pipeline_run']}.json").read_text())
    assert pipe["name"] == "loop-demo-experiment"
    sweep = json.loads((folder / "runs" / "sweeps" /
                        f"{pipe['stages']['train']['sweep_id']}.json").read_text())
    assert sorted(t["parameters"]["model"] for t in sweep["trials"]) == [
        "gradient_boosting", "logreg", "random_forest"]
    assert sweep["best"] is not None
    # window 4: its A/B win promotes v3 over v2
    assert rows[4]["promoted"] == "v2 -> v3" and cycles[4]["trial"]["decision"] == "win"
    # the ledger: the loop proposed (held back by the policy), then moved with the A/B as
    # evidence, in its own name
    ledger = cli("models", "history", "nbops-demo", "--json", "--runs-dir",
                 str(folder / "runs"), env=env)
    events = json.loads(ledger.stdout)
    moves = [e for e in events if e["kind"] == "move" and e["alias"] == "champion"]
    assert [(e["version"], e["who"]) for e in moves[-2:]] == [(2, "nbops-loop"),
                                                               (3, "nbops-loop")]
    assert moves[-2]["evidence"] == [trial["ab_run"]]
    # v2 went on trial because the policy held a better v2 back (a proposal in the loop's
    # name) or because it tied v1 on the new holdout (a tie never promotes, so nothing was
    # proposed): the register stage's outputs say which
    pipe1 = json.loads((folder / "runs" / "pipelines" /
                        f"{cycles[1]['pipeline_run']}.json").read_text())
    register = json.loads((folder / "runs" / pipe1["stages"]["register"]["run_id"] /
                           "run.json").read_text())["outputs"]
    proposed = any(e["kind"] == "proposal" and e["version"] == 2 and e["who"] == "nbops-loop"
                   for e in events)
    if register["score"] == register["champion_score"]:
        assert "ties champion v1" in register["blocked"] and not proposed, register
    else:
        assert register["score"] > register["champion_score"] and proposed, register
    # the audit of v2 shows the cycle that made it and the cycle whose A/B promoted it
    audit = cli("audit", "nbops-demo", "--version", "2", "--json", "--runs-dir",
                str(folder / "runs"), env=env)
    trail = json.loads(audit.stdout)
    assert [(c["id"], c["role"]) for c in trail["cycles"]] == [
        (cycles[1]["id"], "retrain"), (cycles[2]["id"], "trial")]
    assert trial["ab_run"] in trail["cycles"][1]["detail"]
    assert Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"
    history = cli("loop", "history", "--runs-dir", str(folder / "runs"))
    assert history.returncode == 0 and len(history.stdout.strip().splitlines()) == 5


def answered(runs: Path, batch: str, rows: int, champion_wrong: float,
             shadow: int, shadow_wrong: float) -> pd.DataFrame:
    """Rows both the champion (v1) and a shadow answered now, and their labels (all 1)."""
    log = PredictionLog(log_folder(runs, "m"))
    at = datetime.now(timezone.utc).isoformat()
    for variant, version, wrong in (("champion", 1, champion_wrong),
                                    ("shadow", shadow, shadow_wrong)):
        log.append([{"request_id": f"{batch}-{i}", "row": 0, "time": at, "model": "m",
                     "version": version, "variant": variant, "latency_ms": 1.0,
                     "inputs": {"x": float(i)}, "prediction": 0 if i < rows * wrong else 1}
                    for i in range(rows)])
    log.close()
    return pd.DataFrame({"request_id": [f"{batch}-{i}" for i in range(rows)],
                         "target": [1] * rows})


@pytest.mark.slow
def test_a_trial_refuses_a_worse_challenger_and_waits_for_an_approval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial.advance with the real ab_evaluate template, registry and ledger."""
    from mlflow.tracking import MlflowClient

    from nbops.promotion.service import approve
    from nbops.records.lifecycle import make_origin
    from nbops.tracking import registry
    from nbops.tracking.uri import default_uri

    monkeypatch.chdir(tmp_path)
    runs, labels = tmp_path / "runs", tmp_path / "labels"
    labels.mkdir()
    (tmp_path / "retrain.yaml").write_text("name: r\nstages: {}\n")
    (tmp_path / "nbops.yaml").write_text(yaml.safe_dump({"name": "p", "promotion": {
        "champion": {"evidence": ["ab_win"], "approvals": 1}}}))
    cfg = parse({"model": "m", "retrain": "retrain.yaml", "challenger": {"min_labelled": 40},
                 "fresh_data": {"parameter": "prepare.data_path", "labels": "labels"}},
                tmp_path)
    uri = default_uri(runs)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    for _ in range(3):
        registry.register_version("m", run_id=run_id, artifact_path="models/model", tags={},
                                  alias=None, tracking_uri=uri)
    registry.promote("m", 1, "champion", tracking_uri=uri)
    registry.promote("m", 2, "challenger", tracking_uri=uri)

    def advance(trial: Any, cycle: str) -> str | None:
        origin = make_origin(trigger="loop", cycle=cycle)
        return Trial(cfg, uri, runs, cycle, origin, lambda _: None).advance(
            trial, datetime.now(timezone.utc).isoformat())

    # v2 is worse than the champion on the rows both answered: refused, shadow back to v1
    since = datetime.now(timezone.utc).isoformat()
    answered(runs, "old", 30, 0.0, 1, 0.0)  # v1 as its own shadow, before the trial: not used
    worse = opened(2, 1, since, "c0")
    time.sleep(0.01)
    answered(runs, "a", 20, 0.0, 2, 0.5).to_csv(labels / "a.csv", index=False)
    assert advance(worse, "c1") is None
    assert (worse["status"], worse["labelled"], worse["ab_run"]) == ("open", 20, None)
    assert "20 of 40 rows" in worse["reason"]  # too few labelled rows: no test yet
    answered(runs, "b", 40, 0.0, 2, 0.5).to_csv(labels / "b.csv", index=False)
    assert advance(worse, "c2") is None
    assert (worse["status"], worse["decision"], worse["labelled"]) == (
        "refused", "inconclusive", 60)
    assert "challenger worse" in worse["reason"]
    assert registry.version_by_alias("m", "challenger", uri)["version"] == 1
    # v3 is better: the A/B win is the evidence, but the policy wants an approval too
    registry.promote("m", 3, "challenger", tracking_uri=uri)
    better = opened(3, 1, datetime.now(timezone.utc).isoformat(), "c3")
    time.sleep(0.01)
    answered(runs, "c", 60, 0.3, 3, 0.0).to_csv(labels / "c.csv", index=False)
    assert advance(better, "c4") is None
    assert (better["status"], better["decision"]) == ("awaiting_approval", "win")
    assert "approvals: 0 of 1" in better["reason"]
    tested = better["ab_run"]
    ab = json.loads((runs / str(tested) / "run.json").read_text())
    assert ab["outputs"]["challenger_version"] == 3 and ab["origin"]["cycle"] == "c4"
    assert registry.version_by_alias("m", "champion", uri)["version"] == 1
    assert advance(better, "c5") is None and better["status"] == "awaiting_approval"
    # the loop proposed in its own name, so the person who runs it may approve
    approve("m", 3, who=ledger_user(), runs_dir=runs, tracking_uri=uri,
            config=tmp_path / "nbops.yaml")
    reference = advance(better, "c6")
    assert better["status"] == "promoted" and better["ab_run"] == tested  # no second test
    assert registry.version_by_alias("m", "champion", uri)["version"] == 3
    rotated = pd.read_parquet(str(reference))
    assert len(rotated) == 60 and list(rotated.columns) == ["x"]  # the trial's traffic


def ledger_user() -> str:
    from nbops.tracking.ledger import current_user

    return current_user()
