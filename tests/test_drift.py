"""nbops.drift on scenarios with known ground truth."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbops.drift import Policy, compare

RNG = np.random.default_rng(7)


def normal(n: int, mean: float = 0.0, sd: float = 1.0) -> np.ndarray:
    return RNG.normal(mean, sd, n)


def frame(n: int, **overrides: object) -> pd.DataFrame:
    data = {"x": normal(n), "y": normal(n), "c": RNG.choice(list("abc"), n, p=[0.5, 0.3, 0.2])}
    data.update(overrides)  # type: ignore[arg-type]
    return pd.DataFrame(data)


def test_no_drift_at_one_million_rows() -> None:
    report = compare(frame(1_000_000), frame(1_000_000))
    assert report.drifted == [] and report.action == "none"
    assert all(c["p_value"] > 0.01 for c in report.columns.values())


def test_tiny_real_shift_at_one_million_is_reported_not_alarmed() -> None:
    n = 1_000_000
    report = compare(frame(n), frame(n, x=normal(n, mean=0.1)))
    x = report.columns["x"]
    assert x["p_value"] < 1e-10 and x["significant_only"] and not x["drift"]
    assert 0.07 < x["effect_size"] < 0.13


def test_clear_shift_at_fifty_rows_is_caught() -> None:
    report = compare(frame(50), frame(50, x=normal(50, mean=1.5)))
    assert report.columns["x"]["drift"] and report.columns["x"]["effect_size"] > 1
    assert any("small sample" in w for w in report.warnings)


def test_variance_only_change() -> None:
    report = compare(frame(5000), frame(5000, x=normal(5000, sd=2.0)))
    assert report.columns["x"]["drift"]
    assert abs(np.mean(frame(5000)["x"])) < 0.1  # same mean: only the spread changed


def test_new_and_vanished_category() -> None:
    n = 5000
    current = frame(n, c=RNG.choice(list("abd"), n, p=[0.5, 0.3, 0.2]))
    col = compare(frame(n), current).columns["c"]
    assert col["drift"] and col["vanished_levels"] == ["c"]
    assert 0.15 < col["unseen_levels"]["d"] < 0.25


def test_missing_share_jump_is_not_hidden() -> None:
    n = 5000
    x = normal(n)
    x[: n // 5] = np.nan  # same distribution of the rest, 20 % missing
    col = compare(frame(n), frame(n, x=x)).columns["x"]
    assert col["missing"]["current"] == pytest.approx(0.2) and col["missing"]["drift"]
    assert col["drift"]


def test_constant_and_all_null_columns_are_finite() -> None:
    n = 500
    ref = frame(n, k=np.ones(n), z=np.full(n, np.nan))
    cur = frame(n, k=np.full(n, 2.0), z=np.full(n, np.nan))
    report = compare(ref, cur)
    text = json.dumps(report.to_dict(), allow_nan=False)  # raises on NaN or inf
    assert "Infinity" not in text
    assert report.columns["k"]["drift"]
    assert any("all values missing" in w for w in report.columns["z"]["warnings"])


def test_schema_change_keeps_the_rest() -> None:
    ref = frame(1000)
    cur = frame(1000).drop(columns=["y"]).assign(new=1.0, c=RNG.normal(size=1000))
    report = compare(ref, cur)
    assert report.schema == {"added": ["new"], "removed": ["y"], "type_changed": ["c"]}
    assert "x" in report.columns and not report.columns["x"]["drift"]
    assert any("not tested" in w for w in report.columns["c"]["warnings"])


def test_concept_drift_shows_in_performance() -> None:
    n = 4000
    ref, cur = frame(n), frame(n)
    ref["target"] = (ref["x"] > 0).astype(int)
    cur["target"] = (cur["x"] > 0).astype(int)
    ref["pred"] = ref["target"]
    cur["pred"] = np.where(RNG.random(n) < 0.3, 1 - cur["target"], cur["target"])
    cur["target"], cur["pred"] = cur["pred"], cur["target"]  # labels moved, inputs did not
    report = compare(ref, cur, target="target", prediction="pred")
    assert report.drifted == []
    assert report.performance["drop"] == pytest.approx(0.3, abs=0.03)
    assert report.measure == "performance drop" and report.action == "experiment"


def test_prediction_only_drift() -> None:
    n = 4000
    ref, cur = frame(n), frame(n)
    ref["pred"] = RNG.choice([0, 1], n, p=[0.7, 0.3])
    cur["pred"] = RNG.choice([0, 1], n, p=[0.3, 0.7])
    report = compare(ref, cur, prediction="pred")
    assert report.prediction_drift is not None and report.prediction_drift["drift"]
    assert report.drifted == []


def test_unchanged_high_cardinality_column_does_not_alarm() -> None:
    n = 20_000
    levels = [f"user{i}" for i in range(5000)]
    weights = 1 / np.arange(1, 5001) ** 1.1
    weights /= weights.sum()
    ref = frame(n, h=RNG.choice(levels, n, p=weights))
    cur = frame(n, h=RNG.choice(levels, n, p=weights))
    col = compare(ref, cur).columns["h"]
    assert col["unseen_levels"] and not col["drift"]


def test_ids_timestamps_and_text() -> None:
    n = 2000
    words = np.array(["alpha", "beta", "gamma", "delta", "omega"])
    text = [" ".join(RNG.choice(words, RNG.integers(3, 9))) + f" #{i}" for i in range(n)]
    longer = [t + " and then a much longer tail of words" for t in text]
    ref = frame(n, id=[f"id-{i}" for i in range(n)], text=text,
                ts=pd.date_range("2026-01-01", periods=n, freq="min"))
    cur = frame(n, id=[f"id-{i + n}" for i in range(n)], text=longer,
                ts=pd.date_range("2026-02-01", periods=n, freq="min"))
    report = compare(ref, cur)
    assert report.columns["id"]["role"] == "id" and report.columns["id"]["test"] == "none"
    assert report.columns["ts"]["role"] == "timestamp"
    assert report.columns["ts"]["kind"] == "datetime"
    assert report.columns["text"]["kind"] == "text" and report.columns["text"]["drift"]
    assert report.drifted == ["text"]


def test_policy_tiers() -> None:
    policy = Policy()
    values = (0.0, 0.03, 0.05, 0.06, 0.097, 0.10, 0.11, 0.2)
    assert [policy.action(v) for v in values] == \
        ["none", "warn", "retrain", "retrain", "retrain", "retrain", "experiment", "experiment"]
    severity = ["none", "warn", "retrain", "experiment"]
    steps = [severity.index(policy.action(i / 1000)) for i in range(1001)]
    assert steps == sorted(steps)  # more drift never gets a milder action
    with pytest.raises(ValueError, match="must satisfy"):
        Policy(none_below=0.2, retrain_from=0.1)


def test_bonferroni_and_bad_input() -> None:
    report = compare(frame(300), frame(300), multiplicity="bonferroni")
    assert report.multiplicity == "bonferroni"
    with pytest.raises(ValueError, match="empty data"):
        compare(frame(10).iloc[:0], frame(10))
    with pytest.raises(ValueError, match="no column in common"):
        compare(frame(10), pd.DataFrame({"q": [1.0]}))


def test_html_is_static_and_small() -> None:
    n = 2000
    data = {f"n{i}": normal(n) for i in range(20)}
    data.update({f"c{i}": RNG.choice(list("abcdef"), n) for i in range(5)})
    report = compare(pd.DataFrame(data), pd.DataFrame(data).assign(n0=normal(n, 1.0)))
    html = report.to_html()
    assert "<script" not in html and "://" not in html and len(html.encode()) < 500_000
    assert html.count("<tr") == 26 and html.count("class='nbops-drift-row drifted'") == 1
    assert "<span class='reason'>distribution</span>" in html and html.count("<figure") == 1
    bundle = report._repr_mimebundle_()  # a stored notebook: the widget and a static copy
    assert "application/vnd.jupyter.widget-view+json" in bundle
    static = bundle["text/html"]
    assert "<script" not in static and static.count("class='nbops-drift-row drifted'") == 1
    assert "data:image/png;base64," in static
    assert not math.isnan(report.share_drifted)


def test_drift_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli

    n = 3000
    frame(n).to_csv(tmp_path / "ref.csv", index=False)
    frame(n, x=normal(n, mean=2.0), y=normal(n, mean=2.0)).to_parquet(tmp_path / "cur.parquet")
    done = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.parquet"), "--json",
               "--html", str(tmp_path / "report.html"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["columns"]["x"]["drift"] and report["action"] == "experiment"
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    gate = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.parquet"),
               "--fail-on", "retrain")
    assert gate.returncode == 3 and "action: experiment" in gate.stdout
    same = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "ref.csv"),
               "--fail-on", "retrain")
    assert same.returncode == 0 and "action: none" in same.stdout
    ref = str(tmp_path / "ref.csv")
    for args, needle in [((str(tmp_path / "nope.csv"), ref), "does not exist"),
                         ((str(tmp_path / "report.html"), ref), "use a .csv")]:
        bad = cli("drift", *args)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr
    pd.DataFrame({"x": []}).to_csv(tmp_path / "empty.csv", index=False)
    empty = cli("drift", str(tmp_path / "empty.csv"), str(tmp_path / "ref.csv"))
    assert empty.returncode == 2 and "empty data" in empty.stderr
    text = cli("drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.parquet")).stdout
    lines = text.splitlines()
    assert lines[1].startswith("policy tiers: none 0%-2%")
    header = next(line for line in lines if line.strip().startswith("column"))
    assert "p (adj, BH)" in header and "threshold" in header
    x_row = next(line for line in lines if line.strip().startswith("x "))
    assert "distribution" in x_row and "0.15" in x_row  # the reason, and the threshold


def test_each_drifted_column_says_why() -> None:
    n = 4000
    reference = frame(n).assign(level=RNG.choice(list("abcd"), n),
                                kind_change=RNG.normal(0, 1, n))
    current = frame(n).assign(
        x=normal(n, mean=1.0),  # distribution
        y=np.where(RNG.random(n) < 0.3, np.nan, normal(n)),  # missing share only
        level=RNG.choice(list("abcdefghij"), n),  # new levels
        kind_change=RNG.choice(["p", "q"], n))  # the type changed: schema
    columns = compare(reference, current).columns
    assert columns["x"]["reasons"] == ["distribution"]
    assert columns["y"]["reasons"] == ["missing share"]
    assert "unseen levels" in columns["level"]["reasons"]
    assert columns["kind_change"]["reasons"] == ["schema"] and columns["kind_change"]["drift"]
    assert columns["c"]["reasons"] == [] and not columns["c"]["drift"]
    assert columns["x"]["threshold"] == 0.15 and columns["level"]["threshold"] == 0.1


def test_policy_bands_cover_every_tier_in_order() -> None:
    from nbops.drift.plots import history_figure

    policy = Policy()
    assert policy.bands(0.5) == [(0.0, 0.02, "none"), (0.02, 0.05, "warn"),
                                 (0.05, 0.1, "retrain"), (0.1, 0.5, "experiment")]
    rows = [{"id": "a", "started_at": "2026-01-01T00:00:00", "share_drifted": 0.3,
             "action": "experiment", "drifted_columns": ["x"]}]
    axes = history_figure(rows, policy).axes[0]  # type: ignore[arg-type]
    assert len(axes.patches) == 4  # one shaded band per tier


def test_widget_shows_header_table_and_plot() -> None:
    import ipywidgets as w

    n = 2000
    report = compare(frame(n), frame(n, x=normal(n, mean=1.0)))
    box = report.to_widget()
    header, sort, table, chooser, plot = box.children
    assert "Drift:" in header.value and report.action in header.value
    assert table.value.count("nbops-drift-row") == len(report.columns)
    first_row = table.value.split("nbops-drift-row")[1]
    assert "<td>x</td>" in first_row  # sorted with drifted columns first
    sort.value = "column"
    assert table.value.split("nbops-drift-row")[1].startswith("'><td>c</td>")
    assert isinstance(plot, w.Output) and plot.outputs  # a figure was drawn
    chooser.value = "c"
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    hist = report.columns["x"]["histogram"]
    assert len(hist["edges"]) == 21 and abs(sum(hist["current"]) - 1) < 1e-9


@pytest.mark.slow
def test_drift_history_over_monitor_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import cli
    from nbops.runner import RunOptions, run

    runs = tmp_path / "runs"
    n = 400
    base = frame(n)
    base.to_parquet(tmp_path / "ref.parquet")
    for i, shift in enumerate((0.0, 3.0)):
        cur = frame(n, x=normal(n, mean=shift), y=normal(n, mean=shift))
        cur.to_parquet(tmp_path / f"cur{i}.parquet")
        record = run("monitor", {"reference_path": str(tmp_path / "ref.parquet"),
                                 "current_path": str(tmp_path / f"cur{i}.parquet")},
                     options=RunOptions(runs_dir=runs, cwd=tmp_path))
        assert record["status"] == "succeeded", record["error"]
        assert {"artifacts/drift.json", "artifacts/drift.html"} <= {
            a["path"] for a in record["artifacts"]}
    done = cli("drift", "history", "--json", "--runs-dir", str(runs), "--plot",
               str(tmp_path / "history.png"))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["action"] for r in rows] == ["none", "experiment"]
    assert rows[1]["drifted_columns"] == ["x", "y"]
    assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
    text = cli("drift", "history", "--runs-dir", str(runs)).stdout
    assert "action=experiment" in text


@pytest.mark.parametrize("ties", [False, True])
def test_numeric_statistics_match_scipy(ties: bool) -> None:
    from scipy import stats as sps

    from nbops.drift.stats import numeric

    a, b = normal(5000), normal(4000, mean=0.2, sd=1.3)
    if ties:
        a, b = np.round(a), np.round(b)
    result = numeric(a, b)
    reference = sps.ks_2samp(a, b, method="asymp")
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-6)
    assert result.effect_size * np.std(a) == pytest.approx(sps.wasserstein_distance(a, b))
    assert sum(result.histogram["reference"]) == pytest.approx(1.0)


def test_infinite_values_count_as_missing_and_never_make_nan() -> None:
    n = 2000
    current = frame(n, x=np.full(n, np.inf))  # the column became all +inf
    report = compare(frame(n), current)
    x = report.columns["x"]
    assert x["drift"] and x["missing"]["current"] == 1.0
    assert x["missing"]["infinite"] == {"reference": 0.0, "current": 1.0}
    assert "all values infinite in the current data (counted as missing)" in x["warnings"]
    some = frame(n, y=np.where(np.arange(n) % 10 == 0, -np.inf, normal(n)))
    y = compare(frame(n), some).columns["y"]
    assert y["missing"]["infinite"]["current"] == pytest.approx(0.1)
    for report_ in (report, compare(frame(n), some)):
        for col in report_.columns.values():
            for key in ("statistic", "p_value", "effect_size", "psi"):
                assert math.isfinite(col[key]), (key, col)


def test_duplicate_and_unknown_columns_are_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(ValueError, match="duplicate column names: a"):
        compare(dup, dup)
    with pytest.raises(ValueError, match="target column 'label' is in neither"):
        compare(frame(50), frame(50), target="label")
    (tmp_path / "dup.csv").write_text("a,a,b\n1,2,3\n")
    from conftest import cli

    done = cli("drift", str(tmp_path / "dup.csv"), str(tmp_path / "dup.csv"))
    assert done.returncode == 2 and "duplicate column names: a" in done.stderr
    frame(50).to_csv(tmp_path / "ok.csv", index=False)
    done = cli("drift", str(tmp_path / "ok.csv"), str(tmp_path / "ok.csv"), "--prediction", "p")
    assert done.returncode == 2 and "prediction column 'p' is in neither" in done.stderr
    assert "Traceback" not in done.stderr


def test_constant_reference_that_starts_to_vary_is_a_large_change() -> None:
    n = 2000
    current = np.where(np.arange(n) % 2 == 0, 5.0, 6.0)  # half the mass moved
    report = compare(frame(n, z=np.full(n, 5.0)), frame(n, z=current))
    z = report.columns["z"]
    assert z["statistic"] == pytest.approx(0.5) and z["drift"] and not z["significant_only"]
    assert z["effect_size"] >= 0.5  # never smaller than the KS distance


def test_iso_timestamp_strings_are_parsed_with_their_time_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ref = frame(300, when=pd.date_range("2024-01-01", periods=300, freq="h").strftime(
        "%Y-%m-%dT%H:%M:%SZ"))
    cur = frame(300, when=pd.date_range("2024-03-01", periods=300, freq="h").strftime(
        "%Y-%m-%dT%H:%M:%SZ"))
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    from nbops.datasets import load_table

    report = compare(load_table(tmp_path / "ref.csv"), load_table(tmp_path / "cur.csv"))
    when = report.columns["when"]
    assert when["kind"] == "datetime" and when["role"] == "timestamp"
    assert when["time_range"]["reference"][0].startswith("2024-01-01T00:00:00")
    assert when["time_range"]["current"][1].startswith("2024-03-13T11:00:00")
    codes = compare(frame(100, code=["2024"] * 100), frame(100, code=["2025"] * 100))
    assert codes.columns["code"]["kind"] == "categorical"  # a year alone is not a date


def sentences(n: int, vocabulary: list[str], rng: np.random.Generator) -> list[str]:
    """Free text: almost every value unique, lengths of 6-12 words."""
    return [" ".join(rng.choice(vocabulary, rng.integers(6, 13))) + f" ref{i}"
            for i in range(n)]


def test_text_whose_vocabulary_changes_at_the_same_length_is_caught() -> None:
    rng = np.random.default_rng(11)
    n = 3000
    sport = [f"{w}" for w in ("match", "goal", "team", "coach", "season", "score", "league",
                              "player", "referee", "stadium", "transfer", "keeper")]
    finance = [f"{w}" for w in ("market", "bond", "yield", "stock", "equity", "dividend",
                                "inflation", "credit", "broker", "hedge", "index", "rate")]
    ref = frame(n, text=sentences(n, sport, rng))
    mixed = sentences(n, sport, rng)
    for i in range(0, n, 5):  # 40 % of rows from a new topic, same length distribution
        mixed[i] = sentences(1, finance, rng)[0]
        mixed[i + 1] = sentences(1, finance, rng)[0]
    col = compare(ref, frame(n, text=mixed)).columns["text"]
    assert col["kind"] == "text" and col["drift"]
    assert col["text"]["length_effect_size"] < 0.1  # length alone would have missed it
    assert set(col["text"]["new_tokens"]) <= set(finance) and len(col["text"]["new_tokens"]) >= 5
    assert col["text"]["vanished_tokens"] == {}


def test_unchanged_free_text_stays_unflagged() -> None:
    rng = np.random.default_rng(12)
    n = 3000
    vocabulary = [f"word{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + ["the", "of", "and"]
    vocabulary = [w.replace("word", "") * 3 for w in vocabulary]  # letters only
    ref, cur = sentences(n, vocabulary, rng), sentences(n, vocabulary, rng)
    assert len(set(ref)) > 0.99 * n  # almost every value unique
    col = compare(frame(n, text=ref), frame(n, text=cur)).columns["text"]
    assert col["kind"] == "text" and not col["drift"], col
    assert col["text"]["new_tokens"] == {} and col["text"]["vanished_tokens"] == {}


# --- issue 22, class 10: edge decisions -----------------------------------------------------

def test_an_effect_that_overflows_is_maximal_drift() -> None:
    n = 500
    ref = frame(n, big=np.full(n, -1e308))
    cur = frame(n, big=np.full(n, 1e308))
    report = compare(ref, cur)
    col = report.columns["big"]
    assert col["test"] == "ks" and col["drift"] and col["reasons"] == ["distribution"]
    assert any("overflowed" in w for w in col["warnings"])
    assert report.action != "none"
    json.dumps(report.to_dict(), allow_nan=False)  # still finite JSON


def test_an_untested_feature_shows_in_the_verdict() -> None:
    n = 250_000  # a feature with more distinct levels than can be counted exactly

    def side() -> pd.DataFrame:
        return pd.DataFrame({"x": normal(n), "y": normal(n), "z": normal(n),
                             "lvl": [f"L{i}" for i in RNG.integers(0, 240_000, n)]})

    report = compare(side(), side())
    assert report.columns["lvl"]["role"] == "feature" and report.columns["lvl"]["test"] == "none"
    assert report.share_drifted == 0 and report.action == "warn"
    assert any(w.startswith("not tested: lvl") for w in report.warnings)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("mode", ["exact", "stream"])
def test_duplicate_column_names_are_refused_in_every_mode(tmp_path: Path, suffix: str,
                                                          mode: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import cli
    from nbops.drift.sources import CsvSource, ParquetSource

    n = 300
    for side in ("r", "c"):
        path = tmp_path / f"{side}.{suffix}"
        if suffix == "csv":
            path.write_text("a,a,b\n" + "".join(f"{i},{2 * i},{i % 3}\n" for i in range(n)))
        else:
            pq.write_table(pa.table([pa.array(normal(n)), pa.array(normal(n)),
                                     pa.array(np.arange(n) % 3)], names=["a", "a", "b"]), path)
    done = cli("drift", str(tmp_path / f"r.{suffix}"), str(tmp_path / f"c.{suffix}"),
               "--mode", mode)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "duplicate column names: a" in done.stderr and "Traceback" not in done.stderr
    source = CsvSource if suffix == "csv" else ParquetSource
    with pytest.raises(ValueError, match="duplicate column names: a"):
        source(tmp_path / f"r.{suffix}")
