"""Drift beyond memory and beyond one machine: sketches, streamed files, Dask partitions.

Each scale path must reach the same decisions as the exact in-memory comparison, within
the error the report states, and the streamed path must not grow with the number of rows.
"""
from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cli
from nbops.drift import compare
from nbops.drift import summary as summary_module
from nbops.drift.sources import FrameSource, ParquetSource
from nbops.drift.summary import ColumnPlan, merge_all, rank_error, summarise


def sides(n: int, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def side(current: bool) -> pd.DataFrame:
        shift = 0.5 if current else 0.0
        return pd.DataFrame({
            "shifted": rng.normal(shift, 1.0, n),
            "same": rng.normal(0.0, 1.0, n),
            "heavy": rng.standard_t(3, n),
            # constant in the reference, half of its mass moves in the current data
            "flat": np.where(rng.random(n) < 0.5, 1.0, 2.0) if current else np.ones(n),
            "with_nan": np.where(rng.random(n) < (0.3 if current else 0.01), np.nan,
                                 rng.normal(0, 1, n)),
            "level": rng.choice(list("abcd"), n, p=[0.1, 0.2, 0.3, 0.4] if current
                                else [0.4, 0.3, 0.2, 0.1]),
            "steady": rng.choice(list("xyz"), n),
        })

    return side(False), side(True)


def _decisions(report: object) -> dict[str, tuple[bool, bool]]:
    return {n: (c["drift"], c["missing"]["drift"])
            for n, c in report.columns.items()}  # type: ignore[attr-defined]


def test_sketch_mode_agrees_with_exact_within_the_stated_error() -> None:
    reference, current = sides(60_000)
    exact = compare(reference, current)
    sketched = compare(FrameSource(reference, "sketch"), FrameSource(current, "sketch"))
    assert exact.summaries == "exact" and sketched.summaries.startswith("sketch: KLL")
    assert _decisions(sketched) == _decisions(exact)
    assert set(exact.drifted) == {"shifted", "flat", "with_nan", "level"}
    bound = 2 * rank_error()
    for name in ("shifted", "same", "heavy", "flat", "with_nan"):
        a, b = exact.columns[name], sketched.columns[name]
        assert abs(a["statistic"] - b["statistic"]) <= bound + 1e-9, name
        assert abs(a["effect_size"] - b["effect_size"]) <= 0.02 + 0.1 * a["effect_size"]
        assert a["missing"] == b["missing"]  # counts are exact in both modes
    assert sketched.columns["flat"]["effect_size"] > 0.4  # degenerate side, still large
    assert sketched.columns["same"]["p_value"] > 0.05  # sketch noise is not significance
    for name in ("level", "steady"):  # categorical counts are exact in both modes
        assert exact.columns[name]["statistic"] == sketched.columns[name]["statistic"]


def test_merging_chunks_does_not_depend_on_how_rows_were_split() -> None:
    reference, _ = sides(9_000)
    values = reference["with_nan"]
    whole = summarise(values, ColumnPlan("numeric"), "sketch")
    for sizes in ((9_000,), (1_000, 8_000), (3_000, 3_000, 3_000)):
        bounds = np.cumsum((0, *sizes))
        parts = [summarise(values.iloc[a:b], ColumnPlan("numeric"), "sketch")
                 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        merged = merge_all(parts)
        assert (merged.rows, merged.missing) == (whole.rows, whole.missing)
        assert merged.numbers is not None and whole.numbers is not None
        assert merged.numbers.count == whole.numbers.count
        assert merged.numbers.mean == pytest.approx(whole.numbers.mean, rel=1e-12)
        assert merged.numbers.std == pytest.approx(whole.numbers.std, rel=1e-12)
    levels = [summarise(reference["level"].iloc[i::3], ColumnPlan("categorical"), "sketch")
              for i in range(3)]
    counts = merge_all(levels).counts
    assert counts is not None
    assert counts.sort_index().to_dict() == reference["level"].value_counts().sort_index(
    ).to_dict()


def _write(folder: Path, rows: int) -> tuple[Path, Path]:
    reference, current = sides(rows)
    paths = folder / f"ref{rows}.parquet", folder / f"cur{rows}.parquet"
    reference.to_parquet(paths[0], row_group_size=10_000)
    current.to_parquet(paths[1], row_group_size=10_000)
    return paths


def _streamed_peak(paths: tuple[Path, Path]) -> tuple[int, object]:
    """The lowest traced peak of two streamed comparisons (tracemalloc sees every thread
    of the test process, and a collection landing inside one run inflates its peak)."""
    peaks, report = [], None
    for _ in range(2):
        gc.collect()
        tracemalloc.start()
        try:
            report = compare(ParquetSource(paths[0], batch_rows=10_000),
                             ParquetSource(paths[1], batch_rows=10_000))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return min(peaks), report


def test_streamed_parquet_decides_like_exact_and_memory_does_not_grow_with_rows(
        tmp_path: Path) -> None:
    small, large = _write(tmp_path, 40_000), _write(tmp_path, 160_000)
    compare(ParquetSource(small[0]), ParquetSource(small[1]))  # warm imports and caches
    small_peak, _ = _streamed_peak(small)
    large_peak, report = _streamed_peak(large)
    exact = compare(*(pd.read_parquet(p) for p in large))
    assert _decisions(report) == _decisions(exact)
    assert report.n_reference == report.n_current == 160_000  # type: ignore[attr-defined]
    # four times the rows, the same batches: the peak must not follow the row count
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_too_many_levels_in_a_stream_are_refused_for_that_column_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary_module, "MAX_LEVELS", 50)
    rng = np.random.default_rng(0)
    n = 4_000
    reference = pd.DataFrame({"code": [f"k{i % 400}" for i in range(n)],
                              "x": rng.normal(0, 1, n)})
    report = compare(FrameSource(reference, "sketch"), FrameSource(reference.copy(), "sketch"))
    code = report.columns["code"]
    assert code["test"] == "none"
    assert any("more than 100,000 distinct levels" in w for w in code["warnings"]) or any(
        "distinct levels" in w for w in code["warnings"])
    assert report.columns["x"]["test"] == "ks"


def test_cli_streams_parquet_on_request_and_states_the_error(tmp_path: Path) -> None:
    ref, cur = _write(tmp_path, 30_000)
    streamed = cli("drift", str(ref), str(cur), "--mode", "stream", "--json")
    assert streamed.returncode == 0, streamed.stderr
    data = json.loads(streamed.stdout)
    assert data["summaries"].startswith("sketch: KLL") and data["n_reference"] == 30_000
    exact = cli("drift", str(ref), str(cur), "--json")  # auto: these fit in memory
    assert json.loads(exact.stdout)["summaries"] == "exact"
    assert [n for n, c in data["columns"].items() if c["drift"]] == [
        n for n, c in json.loads(exact.stdout)["columns"].items() if c["drift"]]
    text = cli("drift", str(ref), str(cur), "--mode", "stream")
    assert "sketch: KLL" in text.stdout


@pytest.mark.slow
def test_dask_dataframes_are_summarised_on_the_workers_of_a_local_cluster() -> None:
    # the dev extra installs nbops[dask]: a missing install fails here, it is never skipped
    import dask.dataframe as dd
    import distributed
    reference, current = sides(20_000)
    exact = compare(reference, current)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as tasks:
            report = compare(dd.from_pandas(reference, npartitions=4),
                             dd.from_pandas(current, npartitions=3))
    assert report.summaries.startswith("sketch: KLL")
    assert _decisions(report) == _decisions(exact)
    assert report.n_reference == report.n_current == 20_000
    summarised = [t for t in tasks.data if "summarise_chunk" in str(t["key"])]
    assert len(summarised) == 7  # one per partition, both sides
    assert {t["worker"] for t in summarised} <= workers


def test_streamed_csv_finds_the_same_text_and_time_changes(tmp_path: Path) -> None:
    from nbops.drift.sources import CsvSource

    rng = np.random.default_rng(5)
    sport = "match goal team player coach league score season".split()
    money = "market stock price bond yield trader fund bank".split()

    def side(n: int, new_topic: float, start: str) -> pd.DataFrame:
        words = [rng.choice(money if rng.random() < new_topic else sport, 12)
                 for _ in range(n)]
        return pd.DataFrame({
            "note": [" ".join(w) for w in words],
            "when": pd.date_range(start, periods=n, freq="min").strftime("%Y-%m-%dT%H:%M:%S"),
            "x": rng.normal(0, 1, n)})

    side(6_000, 0.0, "2025-01-01").to_csv(tmp_path / "ref.csv", index=False)
    side(6_000, 0.4, "2025-03-01").to_csv(tmp_path / "cur.csv", index=False)
    exact = compare(pd.read_csv(tmp_path / "ref.csv"), pd.read_csv(tmp_path / "cur.csv"))
    streamed = compare(CsvSource(tmp_path / "ref.csv", batch_rows=1_000),
                       CsvSource(tmp_path / "cur.csv", batch_rows=1_000))
    assert _decisions(streamed) == _decisions(exact)
    note = streamed.columns["note"]
    assert note["kind"] == "text" and note["drift"]
    assert set(note["text"]["new_tokens"]) <= set(money) and note["text"]["new_tokens"]
    assert streamed.columns["when"]["time_range"] == exact.columns["when"]["time_range"]
    assert streamed.columns["when"]["time_range"]["current"][0] == "2025-03-01T00:00:00"
