"""The demo pipeline through nbops against the same cells as one plain Python script.

First runs the lifecycle pipeline once (to have resolved parameters), then, REPEAT times
interleaved: ``nbops pipeline run --force`` (every stage executed, recorded and mirrored
to MLflow) with each executor (``pool``, the default: warm kernels, a process per stage;
``--reuse-kernel``; ``papermill``: a new kernel per stage), and one Python process that
executes the very same code cells, stage after stage, with the same injected parameters
(the floor). ``pool`` runs with the modules earlier pools learned (the first pipeline run
above remembers them, as any earlier run on the machine would); ``pool, cold cache`` with
none remembered, as the very first run of a pipeline. Prints medians, the ratios to the
plain script (targets: pool <= 1.5x, reuse <= 1.25x) and the load average.

    .venv/bin/python bench/pipeline.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "notebooks" / "pipeline.yaml"
NBOPS = [str(Path(sys.executable).with_name("nbops"))]


def pipeline(runs: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([*NBOPS, "pipeline", "run", str(DEMO), "--json", "--runs-dir",
                           str(runs), *extra], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def plain_script(runs: Path, record: dict, folder: Path) -> Path:  # type: ignore[type-arg]
    """One script with every stage's code cells, parameters injected as in the pipeline."""
    # each repetition records into a fresh scratch folder (given by the timing loop), so a
    # second repetition never finds the first one's files
    parts = ["import os", "os.environ['NBOPS_RUN_DIR'] = os.environ['BENCH_SCRATCH']"]
    for stage in record["order"]:
        run_id = record["stages"][stage]["run_id"]
        nb = nbformat.read(runs / run_id / "notebook.ipynb", as_version=4)
        code = "\n\n".join(c.source for c in nb.cells if c.cell_type == "code")
        parts.append(f"exec(compile({code!r}, {stage!r}, 'exec'), {{'__name__': '__main__'}})")
    script = folder / "lifecycle.py"
    script.write_text("\n".join(parts) + "\n")
    return script


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=DEMO.parent)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = folder / "runs"
        record = pipeline(runs)
        script = plain_script(runs, record, folder)
        env = {**os.environ, "MLFLOW_TRACKING_URI": record["mlflow"]["tracking_uri"]}
        base = [*NBOPS, "pipeline", "run", str(DEMO), "--force", "--runs-dir", str(runs)]
        ways = {"nbops (pool)": base,
                "nbops (pool, cold cache)": base,
                "nbops --reuse-kernel": [*base, "--reuse-kernel"],
                "nbops (papermill)": [*base, "--executor", "papermill"],
                "plain script": [sys.executable, str(script)]}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for repetition in range(args.repeat):
            scratch = folder / f"scratch-{repetition}"
            scratch.mkdir()
            for name, cmd in ways.items():
                extra = {"BENCH_SCRATCH": str(scratch)}
                if "cold" in name:  # no modules remembered by earlier pools: a first run
                    extra["XDG_CACHE_HOME"] = str(folder / f"cache-{repetition}")
                times[name].append(timed(cmd, {**env, **extra}))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"lifecycle pipeline ({len(record['order'])} stages), median of {args.repeat} "
              f"interleaved runs (load average before: {load}):")
        for name, value in med.items():
            ratio = value / med["plain script"]
            print(f"  {name:<26} {value:7.2f} s   {ratio:5.2f}x the plain script")
        cached = time.perf_counter()
        pipeline(runs)
        print(f"  re-run (register, infer, monitor read the registry: never cached): "
              f"{time.perf_counter() - cached:7.2f} s")


if __name__ == "__main__":
    main()
