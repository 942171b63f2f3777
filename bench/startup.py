"""Start-up of commands that need no kernel, measured side by side in one run.

Builds a 50-record run store (no kernel: records are created and finalized directly), then
times each command REPEAT times, interleaved, against the floor (``python -c pass``: the
interpreter alone) and the alternative a user would otherwise reach for (``papermill
--help``). Also prints what ``python -X importtime`` blames for ``nbops runs ls``.

    .venv/bin/python bench/startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def make_store(runs: Path, n: int = 50) -> None:
    from nbops.records.lifecycle import finalize, new_record
    from nbops.records.store import RunStore

    store = RunStore(runs)
    for i in range(n):
        record = new_record("train", runs.parent, template=None, parameters={"i": i})
        store.create(record)
        finalize(store, record, "succeeded", None)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def importtime(cmd: list[str], env: dict[str, str], top: int = 5) -> list[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].strip()))
    return [f"{us / 1e6:6.3f} s  {name}" for us, name in sorted(rows, reverse=True)[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        make_store(runs)
        env = {**os.environ, "NBOPS_RUNS_DIR": str(runs)}
        nbops = [str(BIN / "nbops")]
        commands = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "papermill --help": [str(BIN / "papermill"), "--help"],
            "nbops --help": [*nbops, "--help"],
            "nbops templates": [*nbops, "templates"],
            "nbops runs ls (50 runs)": [*nbops, "runs", "ls"],
            "nbops pipeline show": [*nbops, "pipeline", "show", "notebooks/pipeline.yaml"],
            "nbops drift --help": [*nbops, "drift", "--help"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                times[name].append(timed(cmd, env))
        load = os.getloadavg()[0]
        floor = statistics.median(times["python -c pass (floor)"])
        alternative = statistics.median(times["papermill --help"])
        print(f"median of {args.repeat}, load average {load:.2f} on {os.cpu_count()} cores")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:<26} {median:6.3f} s   {median / floor:5.1f}x floor   "
                  f"{median / alternative:5.2f}x papermill --help")
        print("largest imports of 'nbops runs ls' (python -X importtime, cumulative):")
        for line in importtime(["-m", "nbops", "runs", "ls"], env):
            print("   ", line)


if __name__ == "__main__":
    main()
