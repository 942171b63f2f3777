"""``nbops sweep``: spaces, strategies, the best trial, the sweep record, real sweeps.

Real kernels run the tiny ``tests/notebooks/fake_sweep.ipynb``: its ``score`` is
-(x - 2)^2 (minus 100 for kind="bad"), logged at every step, so the winner and pruning
are known exactly; x < 0 makes it fail. With ``--seed 5``, Optuna's first 8 trials are
kinds B g g g g B g B (TPE samples at random before 10 trials; seen with the strategy).
"""
from __future__ import annotations

import json
import math
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import NOTEBOOKS, cli
from nbops.contract.template import load_template
from nbops.errors import ConfigError, ParameterError, RecordError, RunNotFoundError, UsageError
from nbops.records.sweeps import SweepStore
from nbops.records.types import TrialEntry
from nbops.sweep.select import best_trial, ranked
from nbops.sweep.space import (
    Choice,
    Range,
    expand_grid,
    parse_grid_option,
    parse_range_option,
    parse_space_text,
    sample,
)
from nbops.sweep.spec import SweepArgs, from_block, from_options
from nbops.sweep.strategies import random_points

FAKE = NOTEBOOKS / "fake_sweep.ipynb"


@pytest.fixture(scope="module")
def tpl() -> Any:
    return load_template(FAKE)


# -- pure: spaces ------------------------------------------------------------------------

def test_grid_values_take_the_declared_types_and_expand_to_the_product(tpl: Any) -> None:
    x = parse_grid_option(tpl, "x=0, 2.5,0")
    assert x == Choice("x", (0.0, 2.5)) and all(type(v) is float for v in x.values)
    kind = parse_grid_option(tpl, "kind=good,bad")
    points = expand_grid({"x": x, "kind": kind})
    assert points == [{"x": 0.0, "kind": "good"}, {"x": 0.0, "kind": "bad"},
                      {"x": 2.5, "kind": "good"}, {"x": 2.5, "kind": "bad"}]


@pytest.mark.parametrize(("option", "expected"), [
    ("steps=1,two", "parameter 'steps'"),
    ("steps=true", "parameter 'steps'"),  # a bool is not an int
    ("kind=good,ugly", "parameter 'kind'"),
    ("y=1,2", "unknown parameter 'y'"),
    ("x=", "empty list of values"),
    ("x=1,,2", "empty value"),
    ("x", "NAME=VALUES"),
])
def test_bad_grid_values_name_the_parameter(tpl: Any, option: str, expected: str) -> None:
    with pytest.raises(ParameterError, match=expected):
        parse_grid_option(tpl, option)


def test_ranges_parse_with_flags_and_int_parameters_get_integer_ranges(tpl: Any) -> None:
    assert parse_range_option(tpl, "x=0.01:10:log") == Range("x", 0.01, 10.0, log=True)
    assert parse_range_option(tpl, "steps=1:5") == Range("steps", 1, 5, integer=True)


@pytest.mark.parametrize(("option", "expected"), [
    ("x=5:1", "LOW < HIGH"), ("x=0:10:log", "LOW > 0"), ("kind=0:1", "not a number"),
    ("x=a:b", "must be numbers"), ("x=1:2:cubic", "unknown range flag"),
    ("steps=1.5:3", "whole bounds"), ("x=nan:1", "finite"), ("x=1", "LOW:HIGH"),
    ("x=true:5", "must be numbers"),
])
def test_bad_ranges_are_refused(tpl: Any, option: str, expected: str) -> None:
    with pytest.raises(ParameterError, match=expected):
        parse_range_option(tpl, option)


def test_random_points_are_seeded_and_within_their_ranges(tpl: Any) -> None:
    spec = from_options(tpl, SweepArgs(random=40, ranges=["x=0.01:10:log", "steps=1:4"],
                                       grid=["kind=good,bad"], seed=5))
    first, again = random_points(spec), random_points(spec)
    assert first == again
    assert first != random_points(from_options(tpl, SweepArgs(
        random=40, ranges=["x=0.01:10:log", "steps=1:4"], grid=["kind=good,bad"], seed=6)))
    assert all(0.01 <= p["x"] <= 10 for p in first)
    assert all(type(p["steps"]) is int and 1 <= p["steps"] <= 4 for p in first)
    assert {p["kind"] for p in first} == {"good", "bad"}
    assert {p["steps"] for p in first} == {1, 2, 3, 4}  # the bounds are reachable
    small = sum(1 for p in first if p["x"] < 0.3)  # log-uniform: ~1/3 below 0.3
    assert 4 <= small <= 26
    rng = random.Random(0)
    assert sample({"x": Choice("x", (1.5,))}, rng) == {"x": 1.5}


def test_space_files_refuse_aliases_and_size_and_parse_choices_and_ranges(tpl: Any) -> None:
    space = parse_space_text(tpl, "x: 0.1:4:log\nkind: [good]\nsteps: {low: 1, high: 3}\n",
                             "space")
    assert space["x"] == Range("x", 0.1, 4.0, log=True)
    assert space["kind"] == Choice("kind", ("good",))
    assert space["steps"] == Range("steps", 1, 3, integer=True)
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "x: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    with pytest.raises(ConfigError, match="anchors/aliases"):
        parse_space_text(tpl, bomb, "space")
    with pytest.raises(ConfigError, match="over"):
        parse_space_text(tpl, "x: [" + "1, " * 40000 + "1]", "space")
    with pytest.raises(ConfigError, match="must map"):
        parse_space_text(tpl, "- 1\n", "space")


def test_sweep_options_are_checked_before_anything_runs(tpl: Any) -> None:
    def spec(**kw: Any) -> Any:
        return from_options(tpl, SweepArgs(**kw), kw.pop("cli", ()))

    with pytest.raises(ConfigError, match="over the limit of 10,000"):
        spec(grid=["x=" + ",".join(["1"] * 10_001)])
    assert spec(grid=["steps=1,1,2"]).trials == 2  # duplicates count once
    with pytest.raises(UsageError, match="--max-trials 300"):
        spec(grid=["x=" + ",".join(str(i) for i in range(100)), "steps=1,2,3"])
    assert spec(grid=["x=1,2"], max_trials=2).trials == 2
    with pytest.raises(UsageError, match="a grid needs values"):
        spec(ranges=["x=0:1"])
    with pytest.raises(UsageError, match="--maximize METRIC or"):
        spec(optuna=3, ranges=["x=0:1"])
    with pytest.raises(UsageError, match="one of --random N and --optuna N"):
        spec(optuna=3, random=3, ranges=["x=0:1"], maximize="score")
    with pytest.raises(UsageError, match="not both"):
        spec(grid=["x=1"], maximize="a", minimize="b")
    with pytest.raises(ParameterError, match="both fixed"):
        from_options(tpl, SweepArgs(grid=["x=1,2"]), [("x", "3")])
    with pytest.raises(ParameterError, match="given twice"):
        spec(grid=["x=1,2"], ranges=["x=0:1"], random=2)
    with pytest.raises(UsageError, match="nothing to sweep"):
        spec()
    derived = spec(random=4)  # Literal parameters are a space of their own
    assert derived.space == {"kind": Choice("kind", ("good", "bad"))}


def test_pipeline_blocks_follow_the_same_rules(tpl: Any) -> None:
    spec = from_block(tpl, {"grid": {"x": [1, 2]}, "maximize": "score"}, {"x": 0.0, "steps": 2})
    assert spec.trials == 2 and spec.fixed == {"steps": 2} and spec.metric == "score"
    spec = from_block(tpl, {"optuna": 3, "space": {"x": "0:4"}, "minimize": "score",
                            "seed": 1}, {})
    assert spec.strategy == "optuna" and spec.space["x"] == Range("x", 0.0, 4.0)
    with pytest.raises(ConfigError, match="unknown keys"):
        from_block(tpl, {"grid": {"x": [1]}, "maximise": "score"}, {})
    with pytest.raises(ConfigError, match="integer"):
        from_block(tpl, {"random": True, "range": {"x": "0:1"}}, {})


# -- pure: the best trial ----------------------------------------------------------------

def _trial(number: int, value: float | None, status: str = "succeeded") -> TrialEntry:
    return {"number": number, "parameters": {}, "status": status,  # type: ignore[typeddict-item]
            "run_id": f"r{number}", "value": value, "metrics": {}, "error": None}


def test_best_trial_ignores_failures_and_nan_and_breaks_ties_by_number() -> None:
    trials = [_trial(0, 0.5), _trial(1, 0.9, "failed"), _trial(2, math.nan), _trial(3, 0.7),
              _trial(4, 0.7, "cached"), _trial(5, 0.99, "pruned"), _trial(6, None)]
    best = best_trial(trials, "maximize")
    assert best is not None and best["number"] == 3
    low = best_trial(trials, "minimize")
    assert low is not None and low["number"] == 0
    assert best_trial(trials, None) is None
    assert best_trial([_trial(0, 1.0, "failed"), _trial(1, math.nan)], "maximize") is None
    order = [t["number"] for t in ranked(trials, "maximize")]
    assert order[:5] == [3, 4, 0, 5, 1] and set(order[-2:]) == {2, 6}  # the winner first


# -- the sweep record --------------------------------------------------------------------

def test_sweep_records_are_validated_on_write_and_read(tmp_path: Path) -> None:
    store = SweepStore(tmp_path)
    with pytest.raises(RunNotFoundError, match="no sweeps"):
        store.read("latest")
    record: Any = {
        "schema": "nbops.sweep/1", "id": "s1", "template": {"name": "t", "path": "p",
                                                             "sha256": "0"},
        "strategy": "grid", "metric": "m", "direction": "maximize", "seed": None,
        "fixed": {}, "space": {}, "status": "succeeded", "started_at": "now",
        "ended_at": None, "duration_s": None, "error": None, "mlflow": None,
        "pipeline": None, "trials": [_trial(0, 1.0)], "best": None}
    store.write(record)
    assert store.read("latest")["trials"][0]["value"] == 1.0
    bad = dict(record, strategy="annealing")
    with pytest.raises(RecordError, match="strategy"):
        store.write(bad)
    store.path("s2").write_text(json.dumps(dict(record, id="s2", trials=[{"number": -1}])))
    with pytest.raises(RecordError, match="s2"):
        store.read("s2")
    with pytest.raises(RunNotFoundError, match="Did you mean 's[12]'"):
        store.read("s3")
    other = SweepStore(tmp_path / "other")
    same_second = [f"20260101T000000-sweep-t-{suffix}" for suffix in ("ffffff", "000000")]
    for sweep_id, started in zip(same_second, ("2026-01-01T00:00:00.100",
                                               "2026-01-01T00:00:00.900"), strict=True):
        other.write(dict(record, id=sweep_id, started_at=started))
    other.write(dict(record, id="20251231T235959-sweep-t-ffffff", started_at="2025"))
    assert other.latest_id() == same_second[1]  # started later, sorts first by id


# -- the command line: bad input ---------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--grid", "y=1,2"], "unknown parameter 'y'"),
    (["--grid", "steps=1,two"], "parameter 'steps'"),
    (["--grid", "x="], "empty list of values"),
    (["--random", "2", "--range", "x=3:1"], "LOW < HIGH"),
    (["--random", "2", "--space", "SPACE"], "anchors/aliases"),
    (["--grid", "x=1,2", "--dask", "local:0"], "local:N"),
    (["--grid", "x=1,2,3", "--max-trials", "2"], "--max-trials 3"),
])
def test_bad_sweeps_exit_2_with_a_message_and_write_nothing(tmp_path: Path, args: list[str],
                                                            expected: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("a: &a [1, 2]\nx: *a\n")
    args = [str(space) if a == "SPACE" else a for a in args]
    runs = tmp_path / "runs"
    result = cli("sweep", str(FAKE), *args, "--maximize", "score", "--runs-dir", str(runs),
                 cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (runs / "sweeps").exists() or not any((runs / "sweeps").iterdir())
    assert not any(p.name.endswith(tuple("0123456789abcdef")) for p in runs.glob("*-*"))


# -- real sweeps -------------------------------------------------------------------------

def _env() -> dict[str, str]:
    """The CLI's environment without a user thread setting (the budget applies)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}


def _sweep(runs: Path, *args: str, cwd: Path) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nbops", "sweep", str(FAKE), *args,
                           "--runs-dir", str(runs)], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _run_folders(runs: Path) -> set[str]:
    return {p.name for p in runs.iterdir() if (p / "run.json").is_file()}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real grid sweep (2 x 3 trials, --jobs 2, MLflow in SQLite), then the same again."""
    home = tmp_path_factory.mktemp("grid")
    runs = home / "runs"
    args = ("--grid", "x=0,2,3", "--grid", "kind=good,bad", "--maximize", "score",
            "--jobs", "2")
    first = _sweep(runs, *args, cwd=home)
    assert first.returncode == 0, first.stderr
    folders = _run_folders(runs)
    second = _sweep(runs, *args, cwd=home)
    assert second.returncode == 0, second.stderr
    ids = SweepStore(runs).ids()
    return {"runs": runs, "home": home, "first": first, "second": second, "folders": folders,
            "records": [SweepStore(runs).read(i) for i in ids]}


@pytest.mark.slow
def test_a_grid_sweep_runs_every_combination_and_picks_the_winner(
        grid_sweep: dict[str, Any]) -> None:
    record = grid_sweep["records"][0]
    trials = record["trials"]
    assert sorted((t["parameters"]["x"], t["parameters"]["kind"]) for t in trials) == sorted(
        (x, k) for x in (0.0, 2.0, 3.0) for k in ("good", "bad"))
    assert all(t["status"] == "succeeded" for t in trials)
    assert record["status"] == "succeeded" and record["strategy"] == "grid"
    best = record["best"]
    winner = next(t for t in trials if t["number"] == best["number"])
    assert winner["parameters"] == {"x": 2.0, "kind": "good"} and best["value"] == 0.0
    for trial in trials:  # each trial is a normal, complete run record of this sweep
        run = json.loads((grid_sweep["runs"] / trial["run_id"] / "run.json").read_text())
        assert run["status"] == "succeeded" and run["sweep"]["sweep_id"] == record["id"]
        assert run["sweep"]["trial"] == trial["number"]
        assert run["metrics"]["score"] == trial["value"] == trial["metrics"]["score"]
    assert f"best: trial {best['number']}" in grid_sweep["first"].stdout


@pytest.mark.slow
def test_trials_are_mlflow_children_of_one_sweep_parent(grid_sweep: dict[str, Any]) -> None:
    record = grid_sweep["records"][0]
    parent = record["mlflow"]["run_id"]
    db = sqlite3.connect(grid_sweep["runs"] / "mlflow.db")
    children = {row[0] for row in db.execute(
        "SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?", (parent,))}
    assert len(children) == 6
    mirrored = {value for run, key, value in db.execute("SELECT run_uuid, key, value FROM tags")
                if key == "nbops.run_id" and run in children}
    assert mirrored == {t["run_id"] for t in record["trials"]}
    tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (parent,)))
    assert tags["nbops.sweep_run"] == record["id"] and tags["nbops.status"] == "succeeded"
    assert tags["summary.best_run"] == record["best"]["run_id"]
    metric = db.execute("SELECT value FROM metrics WHERE run_uuid = ? AND key = 'score'",
                        (parent,)).fetchall()
    assert metric == [(0.0,)]
    status = db.execute("SELECT status FROM runs WHERE run_uuid = ?", (parent,)).fetchone()
    assert status == ("FINISHED",)


@pytest.mark.slow
def test_the_same_sweep_again_is_served_from_the_cache(grid_sweep: dict[str, Any]) -> None:
    first, second = grid_sweep["records"]
    assert _run_folders(grid_sweep["runs"]) == grid_sweep["folders"]  # no new run, no kernel
    assert [t["status"] for t in second["trials"]] == ["cached"] * 6
    assert {t["run_id"] for t in second["trials"]} == {t["run_id"] for t in first["trials"]}
    assert second["best"] == first["best"]
    assert grid_sweep["second"].stderr.count("cached from run") == 6
    assert "not run again" in grid_sweep["second"].stderr


@pytest.mark.slow
def test_parallel_trials_share_the_cores(grid_sweep: dict[str, Any]) -> None:
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    for trial in grid_sweep["records"][0]["trials"]:
        run = json.loads((grid_sweep["runs"] / trial["run_id"] / "run.json").read_text())
        assert run["outputs"]["threads"] == expected


@pytest.mark.slow
def test_sweep_show_ls_and_plot(grid_sweep: dict[str, Any]) -> None:
    runs, home = grid_sweep["runs"], grid_sweep["home"]
    first = grid_sweep["records"][0]
    shown = cli("sweep", "show", first["id"], "--runs-dir", str(runs), "--plot",
                str(home / "sweep.png"), cwd=home)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.strip()]
    table = lines[lines.index(next(line for line in lines if "trial" in line and "status"
                                   in line)) + 1:][:6]
    assert table[0].startswith("*") and " 2.0 " in table[0] and " good " in table[0]
    values = [float(row.split()[3 if row.startswith("*") else 2]) for row in table]
    assert values == sorted(values, reverse=True)
    png = (home / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    latest = cli("sweep", "show", "latest", "--runs-dir", str(runs), cwd=home)
    assert grid_sweep["records"][1]["id"] in latest.stdout and "cached" in latest.stdout
    listed = cli("sweep", "ls", "--runs-dir", str(runs), cwd=home)
    assert listed.returncode == 0 and listed.stdout.count("grid") == 2
    missing = cli("sweep", "show", "nope", "--runs-dir", str(runs), cwd=home)
    assert missing.returncode == 2 and "no sweep 'nope'" in missing.stderr


@pytest.mark.slow
def test_random_sweeps_are_seeded_and_a_failed_trial_does_not_stop_them(
        tmp_path: Path, tpl: Any) -> None:
    runs = tmp_path / "runs"
    args = ("--random", "4", "--range", "x=-1:4", "--seed", "1", "-p", "steps", "1",
            "--maximize", "score", "--tracking-uri", "none")
    result = _sweep(runs, *args, cwd=tmp_path)
    record = SweepStore(runs).read("latest")
    expected = random_points(from_options(tpl, SweepArgs(random=4, ranges=["x=-1:4"],
                                                         seed=1)))
    assert [t["parameters"] for t in record["trials"]] == expected
    assert all(-1 <= t["parameters"]["x"] <= 4 for t in record["trials"])
    failed = [t for t in record["trials"] if t["parameters"]["x"] < 0]
    assert failed, "seed 1 draws a negative x (a failing trial)"
    assert all(t["status"] == "failed" and "negative" in (t["error"] or "") for t in failed)
    assert result.returncode == 0 and "the sweep goes on" in result.stderr
    ok = [t for t in record["trials"] if t["status"] == "succeeded"]
    assert record["best"]["number"] == max(ok, key=lambda t: t["value"])["number"]


@pytest.mark.slow
def test_a_sweep_where_every_trial_fails_exits_1(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = _sweep(runs, "--grid", "x=-1,-2", "--maximize", "score", "--tracking-uri", "none",
                    cwd=tmp_path)
    assert result.returncode == 1
    record = SweepStore(runs).read("latest")
    assert record["status"] == "failed" and "every trial failed" in (record["error"] or "")
    assert record["best"] is None


@pytest.mark.slow
def test_a_metric_the_notebook_does_not_log_is_a_usage_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = _sweep(runs, "--grid", "x=1", "--maximize", "accuracy", "--tracking-uri", "none",
                    cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "metric 'accuracy'" in result.stderr and "it logged score" in result.stderr
    assert "score_out" in result.stderr  # numeric outputs count too
    record = SweepStore(runs).read("latest")
    assert record["status"] == "failed" and "accuracy" in (record["error"] or "")


def _kinds(seed: int, trials: int) -> str:
    """The kinds (B: bad, g: good) Optuna asks for first with ``seed`` (see the module)."""
    from nbops.sweep.strategies import OptunaStrategy

    strategy = OptunaStrategy(from_options(load_template(FAKE), SweepArgs(
        optuna=trials, grid=["kind=good,bad"], ranges=["x=0:4"], seed=seed,
        maximize="score")))
    kinds = ""
    while (asked := strategy.ask()) is not None:
        kinds += "B" if asked[1]["kind"] == "bad" else "g"
        strategy.tell(asked[0], "complete", 0.0)
    return kinds


@pytest.mark.slow
def test_optuna_never_prunes_a_trial_on_the_one_value_it_logs(tmp_path: Path) -> None:
    """A metric logged once (then more work: 1.5 s for a bad trial) is the trial's final
    value: it completes, its value is in the record and the table, Optuna learns it."""
    assert _kinds(5, 8) == "BggggBgB"  # bad trials after the pruner's 5 startup trials
    runs = tmp_path / "runs"
    result = _sweep(runs, "--optuna", "8", "--grid", "kind=good,bad", "--range", "x=0:4",
                    "-p", "steps", "1", "-p", "delay", "1.5", "--seed", "5",
                    "--maximize", "score", "--tracking-uri", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = SweepStore(runs).read("latest")
    assert [t["status"] for t in record["trials"]] == ["succeeded"] * 8, result.stderr
    assert all(t["optuna_state"] == "COMPLETE" for t in record["trials"])
    for trial in record["trials"]:
        run = json.loads((runs / trial["run_id"] / "run.json").read_text())
        assert trial["value"] == run["metrics"]["score"] == run["outputs"]["score_out"]
        assert f" {trial['value']:.4g} " in result.stdout or \
            f" {trial['value']:.4f}".rstrip("0") in result.stdout
    assert "pruned" not in result.stderr and " - " not in result.stdout


@pytest.mark.slow
def test_optuna_prunes_a_trial_whose_curve_is_worse_midway(tmp_path: Path) -> None:
    """Bad trials after 5 completed ones are stopped on an intermediate value; each keeps
    its last value, is ``pruned`` in the sweep record, ``PRUNED`` in the study, and in MLflow
    a FINISHED run tagged nbops.trial_state=pruned."""
    runs = tmp_path / "runs"
    result = _sweep(runs, "--optuna", "8", "--grid", "kind=good,bad", "--range", "x=0:4",
                    "-p", "delay", "1.0", "-p", "steps", "6", "--seed", "5",
                    "--maximize", "score", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = SweepStore(runs).read("latest")
    states = {t["number"]: (t["status"], t.get("optuna_state")) for t in record["trials"]}
    assert states == {n: ("pruned", "PRUNED") if n in (5, 7) else ("succeeded", "COMPLETE")
                      for n in range(8)}, result.stderr
    db = sqlite3.connect(runs / "mlflow.db")
    for number in (5, 7):
        trial = next(t for t in record["trials"] if t["number"] == number)
        run = json.loads((runs / trial["run_id"] / "run.json").read_text())
        steps = [p["step"] for p in run["metric_history"]["score"]]
        assert run["status"] == "killed", result.stderr
        assert steps == list(range(len(steps))) and 1 <= len(steps) < 6  # stopped mid-way
        assert trial["value"] == run["metric_history"]["score"][-1]["value"] < -99
        assert run["tags"]["nbops.trial_state"] == "pruned"
        assert int(run["tags"]["nbops.pruned_at_step"]) < steps[-1] + 1
        mlflow_id = run["mlflow"]["run_id"]
        assert db.execute("SELECT status FROM runs WHERE run_uuid = ?",
                          (mlflow_id,)).fetchone() == ("FINISHED",)
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (mlflow_id,)))
        assert tags["nbops.trial_state"] == "pruned" and tags["nbops.status"] == "killed"
        assert tags["mlflow.note.content"].startswith("**pruned** by sweep")
    assert record["best"]["number"] not in (5, 7)
    assert result.stderr.count("pruned at step") == 2
    table = [line.split() for line in result.stdout.splitlines() if " pruned " in line]
    assert len(table) == 2 and all(float(row[2]) < -99 for row in table)


def _ask(strategy: Any) -> int:
    asked = strategy.ask()
    assert asked is not None
    return int(asked[0])


def test_optuna_learns_completed_and_pruned_trials_with_their_curves(tpl: Any) -> None:
    """Real Optuna, no kernels: Optuna's MedianPruner defaults (5 startup trials); a
    pruned trial's study value is its last intermediate value."""
    from optuna.trial import TrialState

    from nbops.sweep.strategies import OptunaStrategy

    strategy = OptunaStrategy(from_options(tpl, SweepArgs(
        optuna=8, ranges=["x=0:4"], seed=0, maximize="score")))
    for _ in range(4):  # four completed trials are not enough to prune on
        number = _ask(strategy)
        assert strategy.tell(number, "complete", 3.0, [(0, 1.0), (1, 2.0), (2, 3.0)]) \
            == "COMPLETE"
    number = _ask(strategy)
    assert strategy.report(number, 0, -50.0) is False  # 4 completed: still starting up
    assert strategy.tell(number, "complete", 5.0, [(0, -50.0), (1, 5.0)]) == "COMPLETE"
    number = _ask(strategy)
    assert strategy.report(number, 0, -50.0) is True  # worse than the median at step 0
    assert strategy.tell(number, "pruned", None, [(0, -50.0), (1, -40.0)]) == "PRUNED"
    once = _ask(strategy)
    assert strategy.tell(once, "complete", 0.5, [(0, 0.5)]) == "COMPLETE"
    trials = strategy.study.trials
    assert trials[number].state == TrialState.PRUNED and trials[number].value == -40.0
    assert trials[number].intermediate_values == {0: -50.0, 1: -40.0}
    assert trials[0].intermediate_values == {0: 1.0, 1: 2.0, 2: 3.0} and trials[0].value == 3.0
    assert trials[once].state == TrialState.COMPLETE and trials[once].value == 0.5


def test_mlflow_preloaded_by_the_driver_while_a_tracker_opens(tmp_path: Path) -> None:
    """The sweep imports MLflow in a thread while its parent run's tracker opens: MLflow's
    modules import each other, so two threads importing them at once both failed
    ("partially initialized module"): no parent run and no trial mirrored."""
    import subprocess
    import sys

    code = ("import sys, threading\nfrom pathlib import Path\n"
            "from nbops.sweep.driver import _import_mlflow\n"
            "from nbops.tracking.base import open_tracker\n"
            "thread = threading.Thread(target=_import_mlflow)\nthread.start()\n"
            "tracker = open_tracker(sys.argv[1], Path(sys.argv[2]))\nthread.join()\n"
            "print('experiment', tracker.experiment_id)\n")
    for attempt in range(2):
        runs = tmp_path / str(attempt)
        done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{runs / 'mlflow.db'}",
                               str(runs)], env=_env(), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "experiment" in done.stdout, done.stderr[-2000:]


# -- a sweep stage in a pipeline ---------------------------------------------------------

def _pipeline(tmp_path: Path, train: dict[str, Any], echo_ref: str) -> Path:
    import yaml

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "swept", "stages": {
        "train": {"template": str(FAKE), **train},
        "echo": {"template": str(NOTEBOOKS / "echo.ipynb"), "parameters": {"s": echo_ref}},
    }}))
    return path


@pytest.mark.slow
def test_a_pipeline_sweep_stage_passes_its_best_trial_downstream(tmp_path: Path) -> None:
    train = {"parameters": {"steps": 1, "x": 9.0},
             "sweep": {"grid": {"x": [1, 2, 3.5]}, "maximize": "score"}}
    path = _pipeline(tmp_path, train, "${train.best.outputs.model_path}")
    runs = tmp_path / "runs"
    done = cli("pipeline", "run", str(path), "--runs-dir", str(runs), "--jobs", "2",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(next((runs / "pipelines").glob("*.json")).read_text())
    stage = record["stages"]["train"]
    sweep = SweepStore(runs).read(stage["sweep_id"])
    assert sweep["pipeline"] == {"run_id": record["id"], "stage": "train"}
    assert sorted(t["parameters"]["x"] for t in sweep["trials"]) == [1.0, 2.0, 3.5]
    assert stage["run_id"] == sweep["best"]["run_id"]  # the stage's record: the winner's
    best = json.loads((runs / stage["run_id"] / "run.json").read_text())
    assert best["parameters"]["x"] == 2.0 and best["parameters"]["steps"] == 1
    assert best["pipeline"]["run_id"] == record["id"]
    echo = json.loads((runs / record["stages"]["echo"]["run_id"] / "run.json").read_text())
    assert echo["outputs"]["echo"]["s"] == "model-good-2.0"
    assert f"best of sweep {stage['sweep_id']}" in done.stdout
    db = sqlite3.connect(runs / "mlflow.db")  # the sweep's parent is the pipeline's child
    parent = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?",
                             (sweep["mlflow"]["run_id"],)))
    assert parent["mlflow.parentRunId"] == record["mlflow"]["run_id"]
    again = cli("pipeline", "run", str(path), "--runs-dir", str(runs), cwd=tmp_path)
    assert again.returncode == 0 and again.stderr.count("cached from run") == 4  # 3 + echo


@pytest.mark.parametrize(("train", "ref", "expected"), [
    ({"sweep": {"grid": {"x": [1, 2]}}}, "${train.outputs.model_path}", "maximize: METRIC"),
    ({"sweep": {"grid": {"x": ["a"]}, "maximize": "score"}}, "${train.outputs.model_path}",
     "parameter 'x'"),
    ({"sweep": {"grid": {"x": [1]}, "maximize": "score", "optuna": 2, "random": 2}},
     "${train.outputs.model_path}", "--random N and --optuna N"),
    ({"sweep": [1]}, "${train.outputs.model_path}", "'sweep' must be a mapping"),
    ({"parameters": {"steps": 1}}, "${train.best.outputs.model_path}", "no 'sweep:' block"),
])
def test_bad_sweep_blocks_exit_2_before_anything_runs(tmp_path: Path, train: dict[str, Any],
                                                      ref: str, expected: str) -> None:
    path = _pipeline(tmp_path, train, ref)
    runs = tmp_path / "runs"
    done = cli("pipeline", "run", str(path), "--runs-dir", str(runs), cwd=tmp_path)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert "stage 'train'" in done.stderr or "stage 'echo'" in done.stderr
    assert not (runs / "pipelines").exists() and not (runs / "sweeps").exists()


def test_pipeline_show_says_a_sweep_stage_sweeps(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, {"sweep": {"grid": {"x": [1, 2]}, "maximize": "score"}},
                     "${train.best.outputs.model_path}")
    shown = cli("pipeline", "show", str(path), "--runs-dir", str(tmp_path / "runs"),
                cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "train [fake_sweep]: will sweep" in shown.stdout
    assert "echo [echo] <- train: will run" in shown.stdout


def test_the_step_watcher_follows_every_trial_of_its_sweep(tmp_path: Path) -> None:
    from nbops.sweep.watch import StepWatcher

    (tmp_path / "old").mkdir()
    watcher = StepWatcher(tmp_path, "s1", "score")
    for name, sweep, trial in (("a", "s1", 0), ("b", "s1", 1), ("c", "other", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"sweep": {"sweep_id": sweep, "trial": trial, "cache_key": "k"}}))
        events = [{"kind": "metric", "name": "score", "value": float(trial + s), "step": s}
                  for s in range(2)] + [{"kind": "metric", "name": "loss", "value": 1.0,
                                         "step": 0}]
        (tmp_path / name / "events.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in events) + '{"kind": "met')  # torn line
    # only intermediate values: the newest (step 1) may be the last, and is held back
    assert watcher.new_points(0) == [(0, 0.0)]
    assert watcher.new_points(1) == [(0, 1.0)]  # found while looking for 0
    assert watcher.new_points(0) == [] and watcher.new_points(2) == []
    with open(tmp_path / "a" / "events.jsonl", "a") as handle:  # the torn line completes
        handle.write('ric", "name": "score", "value": 5.0, "step": 2}\n')
    assert watcher.new_points(0) == [(1, 1.0)]
    with open(tmp_path / "a" / "events.jsonl", "a") as handle:  # step 2 again, then 3
        handle.write(json.dumps({"kind": "metric", "name": "score", "value": 6.0, "step": 2})
                     + "\n" + json.dumps({"kind": "metric", "name": "score", "value": 7.0,
                                          "step": 3}) + "\n")
    assert watcher.new_points(0) == [(2, 6.0)]


def test_a_trial_that_has_ended_is_never_pruned(tmp_path: Path, tpl: Any) -> None:
    """Real Optuna and a real events file: the same intermediate value prunes a running
    trial, not one whose future is done; a trial asked to stop that succeeded anyway is
    not pruned."""
    from concurrent.futures import Future

    from nbops.sweep.pruning import Pruning
    from nbops.sweep.strategies import OptunaStrategy

    strategy = OptunaStrategy(from_options(tpl, SweepArgs(
        optuna=8, ranges=["x=0:4"], seed=0, maximize="score")))
    for _ in range(5):
        strategy.tell(_ask(strategy), "complete", 1.0, [(0, 1.0), (1, 1.0)])
    pruning = Pruning(tmp_path, "s1", "score", strategy)
    running: dict[int, Future[Any]] = {}
    for name in ("ended", "running"):
        number = _ask(strategy)
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"sweep": {"sweep_id": "s1", "trial": number, "cache_key": "k"}}))
        (tmp_path / name / "events.jsonl").write_text("".join(
            json.dumps({"kind": "metric", "name": "score", "value": -9.0, "step": step}) + "\n"
            for step in (0, 1)))
        running[number] = Future()
    ended, alive = running
    running[ended].set_result({})
    assert pruning.check(running) == [(alive, 0, -9.0)]
    assert pruning.pruned_at(alive, {"status": "killed"}) == 0
    pruning.at[ended] = 0  # asked to stop, but it had succeeded
    assert pruning.pruned_at(ended, {"status": "succeeded"}) is None


def test_a_metric_logged_once_is_never_an_intermediate_value(tmp_path: Path) -> None:
    from nbops.sweep.watch import StepWatcher

    watcher = StepWatcher(tmp_path, "s1", "acc")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text(json.dumps(
        {"sweep": {"sweep_id": "s1", "trial": 0, "cache_key": "k"}}))
    (tmp_path / "a" / "events.jsonl").write_text(json.dumps(
        {"kind": "metric", "name": "acc", "value": 0.9, "step": 0}) + "\n")
    assert watcher.new_points(0) == [] and watcher.new_points(0) == []


@pytest.mark.slow
def test_a_changed_input_file_runs_the_trials_again(tmp_path: Path) -> None:
    """The cache key covers the parameters; the input files a trial read are re-hashed."""
    import subprocess
    import sys

    runs, data = tmp_path / "runs", tmp_path / "data.txt"
    data.write_text("1 2 3")

    def sweep() -> Any:
        return subprocess.run(
            [sys.executable, "-m", "nbops", "sweep", str(NOTEBOOKS / "consume.ipynb"),
             "--grid", "factor=1,2", "-p", "path", "data.txt", "-p", "total", "6",
             "--maximize", "scaled", "--tracking-uri", "none", "--runs-dir", str(runs)],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)

    first = sweep()
    assert first.returncode == 0, first.stderr
    assert SweepStore(runs).read("latest")["best"]["value"] == 12.0  # an output as metric
    assert [t["status"] for t in SweepStore(runs).read("latest")["trials"]] == ["succeeded"] * 2
    assert sweep().stderr.count("cached from run") == 2
    data.write_text("3 2 1")  # same parameters, same sum, other content
    third = sweep()
    assert third.returncode == 0 and "cached" not in third.stderr
    assert [t["status"] for t in SweepStore(runs).read("latest")["trials"]] == ["succeeded"] * 2


def test_the_python_api_runs_pipelines_with_sweep_stages() -> None:
    import nbops
    from nbops.pipeline.run import PipelineOptions
    from nbops.sweep.stage import PipelineSweeper, run_pipeline_with_sweeps

    assert nbops.run_pipeline is run_pipeline_with_sweeps
    options = PipelineOptions()
    with pytest.raises(ConfigError, match="does not exist"):
        nbops.run_pipeline(Path("/nonexistent/pipeline.yaml"), options)
    assert isinstance(options.sweeper, PipelineSweeper)


@pytest.mark.slow
def test_a_point_drawn_twice_runs_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = _sweep(runs, "--random", "3", "--grid", "x=2", "-p", "steps", "1",
                    "--maximize", "score", "--tracking-uri", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trials = SweepStore(runs).read("latest")["trials"]
    assert [t["status"] for t in trials] == ["succeeded", "cached", "cached"]
    assert len({t["run_id"] for t in trials}) == 1 and len(_run_folders(runs)) == 1
