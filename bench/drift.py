"""Drift at scale: nbops.drift against bare numpy/scipy and Evidently, side by side.

Data: ROWS rows per side x 25 columns (20 numeric, 5 categorical), a few of them shifted.
Timed in one run: nbops.drift.compare; the same statistics written directly with
numpy/scipy (KS, Wasserstein, PSI, chi-square, Jensen-Shannon); and Evidently 0.7's
DataDriftPreset, which needs pandas < 3 and so runs in its own virtual environment
(built once under .bench/evidently-env from the package registry). Also reports the peak
memory of nbops.drift against the size of the two input frames.

    .venv/bin/python bench/drift.py [--rows 1000000] [--skip-evidently]

With ``--stream-rows N`` it measures the streaming mode instead: two Parquet files of N rows
x 25 columns are written piecewise under .bench/, and ``nbops drift REF CUR --mode stream``
runs on them in a child process whose peak resident memory is printed beside the size the
two files would take in memory.

    .venv/bin/python bench/drift.py --stream-rows 10000000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

ROOT = Path(__file__).resolve().parents[1]
EVIDENTLY_ENV = ROOT / ".bench" / "evidently-env"


def make_data(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def side(shift: float) -> pd.DataFrame:
        data = {f"n{i}": rng.normal(shift if i < 3 else 0.0, 1.0, rows) for i in range(20)}
        for i in range(5):
            p = [0.4, 0.3, 0.2, 0.1] if shift == 0 or i else [0.1, 0.2, 0.3, 0.4]
            data[f"c{i}"] = pd.Categorical(rng.choice(list("abcd"), rows, p=p)).astype(str)
        return pd.DataFrame(data)

    return side(0.0), side(0.3)


def floor(reference: pd.DataFrame, current: pd.DataFrame) -> int:
    """The same statistics written the simplest fast way: the floor nbops is measured against.

    Per numeric column: missing shares, one sort of each side and one linear merge of the two
    sorted runs (a stable sort of two runs) for KS and Wasserstein, reference-decile bins via
    ``searchsorted`` for PSI. Per categorical column: missing shares, factorize both sides
    together and ``bincount`` for chi-square and Jensen-Shannon. Single-threaded.
    """
    drifted = 0
    for name in reference.columns:
        a, b = reference[name], current[name]
        if a.dtype.kind == "f":
            x, y = a.to_numpy(), b.to_numpy()
            keep_x, keep_y = np.isfinite(x), np.isfinite(y)
            _ = (1 - keep_x.mean(), 1 - keep_y.mean())  # missing shares
            x, y = np.sort(x[keep_x]), np.sort(y[keep_y])
            merged = np.concatenate([x, y])
            order = np.argsort(merged, kind="stable")
            grid = merged[order]
            from_x = order < len(x)
            gap = np.abs(np.cumsum(from_x) / len(x) - np.cumsum(~from_x) / len(y))
            ks = float(gap.max())
            w = float(np.sum(gap[:-1] * np.diff(grid))) / float(x.std())
            p_value = stats.kstwo.sf(ks, round(len(x) * len(y) / (len(x) + len(y))))
            edges = x[np.linspace(0, len(x) - 1, 11).astype(int)[1:-1]]
            p = np.bincount(np.searchsorted(edges, x), minlength=10) / len(x)
            q = np.bincount(np.searchsorted(edges, y), minlength=10) / len(y)
            _ = np.sum((q - p) * np.log(np.maximum(q, 1e-4) / np.maximum(p, 1e-4)))
            drifted += int(p_value < 0.05 and max(w, ks) > 0.15)
        else:
            _ = (a.isna().mean(), b.isna().mean())
            codes, levels = pd.factorize(pd.concat([a, b], ignore_index=True))
            r = np.bincount(codes[:len(a)][codes[:len(a)] >= 0], minlength=len(levels))
            c = np.bincount(codes[len(a):][codes[len(a):] >= 0], minlength=len(levels))
            chi2 = stats.chi2_contingency(np.vstack([r, c]))
            js = jensenshannon(r / r.sum(), c / c.sum(), base=2)
            drifted += int(chi2.pvalue < 0.05 and js > 0.1)
    return drifted


class RssSampler:
    """Peak growth of the resident set size while it runs (catches Arrow buffers too)."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return (self.peak - self.base) / 2**20


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def evidently_seconds(folder: Path) -> float:
    python = EVIDENTLY_ENV / "bin" / "python"
    if not python.exists():
        print("building the Evidently environment (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "evidently==0.7.23",
                        "pandas<3", "pyarrow"], check=True)
    code = (
        "import sys, time, pandas as pd\n"
        "from evidently import Report\n"
        "from evidently.presets import DataDriftPreset\n"
        "ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])\n"
        "t = time.perf_counter()\n"
        "Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)\n"
        "print(time.perf_counter() - t)\n")
    done = subprocess.run([str(python), "-c", code, str(folder / "ref.parquet"),
                           str(folder / "cur.parquet")], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def write_parquet(path: Path, rows: int, shift: float, seed: int,
                  chunk: int = 1_000_000) -> None:
    """N rows like ``make_data``, written a million rows at a time (never all in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcd"))
    writer = None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            data = {f"n{i}": rng.normal(shift if i < 3 else 0.0, 1.0, n) for i in range(20)}
            for i in range(5):
                p = [0.4, 0.3, 0.2, 0.1] if shift == 0 or i else [0.1, 0.2, 0.3, 0.4]
                data[f"c{i}"] = letters[rng.choice(4, n, p=p)]
            table = pa.table(data)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=250_000)
    finally:
        if writer is not None:
            writer.close()


def stream(rows: int) -> None:
    import resource

    folder = ROOT / ".bench" / f"stream-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    ref, cur = folder / "ref.parquet", folder / "cur.parquet"
    for path, shift, seed in ((ref, 0.0, 1), (cur, 0.3, 2)):
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write_parquet(path.with_suffix(".tmp"), rows, shift, seed)
            path.with_suffix(".tmp").rename(path)
    from nbops.drift.sources import _uncompressed_bytes

    in_memory = sum(_uncompressed_bytes(p) for p in (ref, cur)) / 2**20
    on_disk = sum(p.stat().st_size for p in (ref, cur)) / 2**20
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nbops", "drift", str(ref), str(cur),
                           "--mode", "stream", "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    import json

    report = json.loads(done.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    drifted = [n for n, c in report["columns"].items() if c["drift"]]
    print(f"{rows:,} rows per side x 25 columns: {on_disk:.0f} MB on disk, "
          f"{in_memory:.0f} MB uncompressed (Arrow), more as pandas frames")
    print(f"  nbops drift --mode stream : {seconds:7.1f} s, peak RSS {peak:.0f} MB "
          f"(whole process, interpreter and imports included) = "
          f"{peak / in_memory:.2f}x the uncompressed data")
    print(f"  drifted: {', '.join(drifted)}; action {report['action']}; "
          f"{report['summaries']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--stream-rows", type=int, default=None)
    args = parser.parse_args()
    if args.stream_rows:
        stream(args.stream_rows)
        return
    from nbops.drift import compare

    reference, current = make_data(args.rows)
    frames_mb = (reference.memory_usage(deep=True).sum()
                 + current.memory_usage(deep=True).sum()) / 2**20
    compare(reference.head(1000), current.head(1000))  # warm imports
    bare_s, bare_drifted = timed(floor, reference, current)
    tracemalloc.start()
    sampler = RssSampler()
    nbops_s, report = timed(compare, reference, current)
    rss_mb = sampler.stop()
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{args.rows:,} rows per side x {reference.shape[1]} columns "
          f"({frames_mb:.0f} MB of input frames)")
    print(f"  floor (numpy/scipy, 1 thread) : {bare_s:7.2f} s  ({bare_drifted} drifted)")
    print(f"  nbops.drift      : {nbops_s:7.2f} s  ({len(report.drifted)} drifted, "
          f"action {report.action})")
    print(f"  ratio nbops / floor : {nbops_s / bare_s:.2f}x  (target <= 1.5x)")
    print(f"  nbops peak memory : {peak_mb:.0f} MB traced (Python/numpy), {rss_mb:.0f} MB peak "
          f"RSS growth = {max(peak_mb, rss_mb) / frames_mb:.2f}x the input frames (target < 3x)")
    if not args.skip_evidently:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            reference.to_parquet(folder / "ref.parquet")
            current.to_parquet(folder / "cur.parquet")
            evidently_s = evidently_seconds(folder)
        print(f"  Evidently 0.7 DataDriftPreset : {evidently_s:7.2f} s")
        print(f"  ratio Evidently / nbops : {evidently_s / nbops_s:.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
