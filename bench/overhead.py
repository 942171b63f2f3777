"""Fixed cost of a run: nbops vs papermill vs plain Python, measured side by side.

Runs a trivial template (one parameter, one cell) REPEAT times each way, interleaved so
machine noise hits all three alike, and prints medians and ratios. ``nbops run`` is timed
until it returns, which is when its record is final and mirrored to MLflow: checked after
every run (the benchmark stops if a record is not). Then compares saving a scikit-learn
model with MLflow's requirement inference against nbops' known requirements.

    .venv/bin/python bench/overhead.py [--repeat 5]
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
import warnings
from pathlib import Path

import nbformat

BIN = Path(sys.executable).parent


def trivial_template(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["nbops"] = {"stage": "trivial"}
    nb.cells = [nbformat.v4.new_code_cell("x: int = 1  # input", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("y = x + 1")]
    path = folder / "trivial.ipynb"
    nbformat.write(nb, path)
    return path


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def check_mirrored(runs: Path) -> None:
    """Every record is final and mirrored the moment ``nbops run`` returned."""
    for path in runs.glob("*/run.json"):
        record = json.loads(path.read_text())
        if record["status"] != "succeeded" or not record["mlflow"]["synced"]:
            raise SystemExit(f"{path.parent.name}: not final and mirrored when nbops run "
                             f"returned ({record['status']}, {record['mlflow']})")


def model_save_times(folder: Path) -> tuple[float, float]:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from nbops.models import save_model

    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        mlflow.sklearn.save_model(model, str(folder / "inferred"),
                                  serialization_format="cloudpickle")
        inferred = time.perf_counter() - start
    start = time.perf_counter()
    save_model(model, folder / "known")
    known = time.perf_counter() - start
    return inferred, known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = trivial_template(folder)
        ways = {
            "python -c": [sys.executable, "-c", "x = 2\ny = x + 1"],
            "papermill CLI": [str(BIN / "papermill"), str(template), str(folder / "out.ipynb"),
                              "-p", "x", "2", "--no-progress-bar"],
            "nbops run": [str(BIN / "nbops"), "run", str(template), "-p", "x", "2",
                          "--runs-dir", str(folder / "runs")],
        }
        timed(ways["nbops run"], folder)  # create the MLflow store once, outside the timing
        times: dict[str, list[float]] = {name: [] for name in ways}
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for _ in range(args.repeat):
            for name, cmd in ways.items():
                times[name].append(timed(cmd, folder))
                if name == "nbops run":
                    check_mirrored(folder / "runs")
        med = {name: statistics.median(values) for name, values in times.items()}
        after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"trivial template, median of {args.repeat} interleaved runs (load average "
              f"before: {load}, after: {after}; nbops run timed until it returned with its "
              "record final and mirrored to MLflow):")
        for name, value in med.items():
            print(f"  {name:<14} {value:7.2f} s")
        print(f"  ratio nbops / papermill : {med['nbops run'] / med['papermill CLI']:.2f}x")
        print(f"  ratio nbops / python -c : {med['nbops run'] / med['python -c']:.1f}x")
        print(f"  ratio papermill / python -c : {med['papermill CLI'] / med['python -c']:.1f}x")
        inferred, known = model_save_times(folder)
        print("saving a scikit-learn model in MLflow format:")
        print(f"  MLflow inferring requirements : {inferred:6.2f} s")
        print(f"  nbops with known requirements : {known:6.2f} s")
        print(f"  ratio inferred / known        : {inferred / known:.1f}x")


if __name__ == "__main__":
    main()
