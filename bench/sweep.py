"""An 8-trial sweep of ``templates/train.ipynb``, four ways, side by side in one run.

1. ``nbops sweep --executor papermill`` sequentially (``--jobs 1``): a new kernel per
   trial, one after the other (the baseline the speed-ups are measured against);
2. ``nbops sweep`` sequentially with its default ``pool`` executor (the next trial's kernel
   starts and imports while one runs, so this already uses a second core);
3. ``nbops sweep --jobs 2`` (the thread scheduler; each kernel gets max(1, cores // 2)
   OpenMP threads);
4. a local process pool of 2 running plain papermill (no records, no MLflow; 1 thread per
   kernel), the fair floor for two at a time;
5. ``nbops sweep --dask local:2`` (two Dask process workers; target >= 1.8x the baseline),
   only if ``open_scheduler(2, "local:2")`` works in this build (skipped, and said so,
   otherwise).

Every variant gets a fresh runs folder, so the cache never helps. Prints each time, the
speed-up against the sequential sweep, and the load average (the machine is shared: a high
load makes the numbers noisy). Run on demand, not in the tests:

    .venv/bin/python bench/sweep.py [--trials 8]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "templates" / "train.ipynb"
MODELS = ("logreg", "random_forest")


def grid(trials: int) -> list[dict[str, object]]:
    """``trials`` points: C over a log grid crossed with two models."""
    per_model = max(1, trials // len(MODELS))
    cs = [round(10 ** (-2 + 3 * i / max(1, per_model - 1)), 4) for i in range(per_model)]
    return [{"C": c, "model": m} for c in cs for m in MODELS][:trials]


def nbops_sweep(points: list[dict[str, object]], runs: Path, *extra: str) -> float:
    cs = ",".join(str(c) for c in dict.fromkeys(p["C"] for p in points))
    models = ",".join(dict.fromkeys(str(p["model"]) for p in points))
    cmd = [sys.executable, "-m", "nbops", "sweep", str(TRAIN), "--grid", f"C={cs}",
           "--grid", f"model={models}", "--maximize", "train_accuracy", "--runs-dir",
           str(runs), *extra]
    runs.parent.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=runs.parent)
    return time.perf_counter() - start


def _one(args: tuple[dict[str, object], str]) -> None:
    import logging

    import papermill

    logging.getLogger("papermill").setLevel(logging.ERROR)  # it cannot read Literal[...]

    point, out = args
    papermill.execute_notebook(str(TRAIN), out, parameters=point, progress_bar=False,
                               kernel_name="python3", cwd=str(Path(out).parent))


def papermill_pool(points: list[dict[str, object]], folder: Path) -> float:
    folder.mkdir()
    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # what a tuned pool would do on 2 cores
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_one, [(p, str(folder / f"out{i}.ipynb"))
                                 for i, p in enumerate(points)]))
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    return time.perf_counter() - start


def dask_available() -> str | None:
    """None when ``--dask local:2`` works here, else why not."""
    from nbops.errors import NbopsError
    from nbops.pipeline.scheduler import open_scheduler

    try:
        open_scheduler(2, "local:2").shutdown()
    except NbopsError as exc:
        return str(exc)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    points = grid(args.trials)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        times["sequential, --executor papermill"] = nbops_sweep(
            points, base / "s" / "runs", "--executor", "papermill")
        times["nbops sweep (sequential, pool)"] = nbops_sweep(points, base / "a" / "runs")
        times["nbops sweep --jobs 2"] = nbops_sweep(points, base / "b" / "runs", "--jobs", "2")
        times["papermill, process pool of 2"] = papermill_pool(points, base / "c")
        why = dask_available()
        if why is None:
            times["nbops sweep --dask local:2"] = nbops_sweep(points, base / "d" / "runs",
                                                              "--dask", "local:2")
    sequential = times["sequential, --executor papermill"]
    print(f"{len(points)} trials of {TRAIN.name}; load average before {load} and after "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    for name, seconds in times.items():
        print(f"  {name:<32} {seconds:7.1f} s   speed-up {sequential / seconds:5.2f}x")
    if why is not None:
        print(f"  {'nbops sweep --dask local:2':<32} skipped: {why}")


if __name__ == "__main__":  # process pools (and a Dask LocalCluster) need the guard
    main()
