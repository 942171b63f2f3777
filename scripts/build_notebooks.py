"""Write the interactive example notebooks in notebooks/.

    .venv/bin/python scripts/build_notebooks.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat

OUT = Path(__file__).resolve().parents[1] / "notebooks"


def notebook(name: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for source in cells:
        source = source.strip()
        if source.startswith("#") and not source.startswith("# NBVAL"):
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source))
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"
    nbformat.write(nb, OUT / f"{name}.ipynb")


notebook(
    "quickstart",
    """
# nbops quickstart

Run a stage template and the lifecycle pipeline from Python, then look at what was
recorded. Runs go to `./runs` (or `$NBOPS_RUNS_DIR`); small parameters keep this quick.
""",
    """
import nbops
import pandas as pd
""",
    "## Run one stage",
    """
record = nbops.run("sample", {"C": 0.5, "dataset": "wine"})
record["status"], record["metrics"]["accuracy"], record["outputs"]
""",
    """
# NBVAL_CHECK_OUTPUT
print(record["status"], sorted(record["outputs"]))
""",
    """
## Run the lifecycle pipeline

`pipeline.yaml` (next to this notebook) chains prepare → train → evaluate → register →
infer → monitor. Overrides use `STAGE.PARAMETER`. Run this cell twice: the second time
every stage comes from the cache.
""",
    """
result = nbops.run_pipeline("pipeline.yaml", overrides=[
    ("prepare.n_rows", "300"), ("train.n_estimators", "20"), ("evaluate.permutation_repeats", "1")])
pd.DataFrame(result["stages"]).T
""",
    """
# NBVAL_CHECK_OUTPUT
print(result["status"], list(result["stages"]))
""",
    "## Inspect the records",
    """
evaluation = nbops.load_run(result["stages"]["evaluate"]["run_id"])
pd.Series(evaluation.metrics).head(8)
""",
    """
result["summary"]
""",
)

notebook(
    "run_explorer",
    """
# Run explorer

Load runs, inspect their parameters, metrics, outputs, artifacts and models, and compare
several runs side by side.
""",
    """
import matplotlib.pyplot as plt
import pandas as pd

import nbops
from nbops.runs import list_records
""",
    "## A small sweep to explore",
    """
sweep = [nbops.run("sample", {"C": c, "dataset": "breast_cancer"}) for c in (0.01, 0.1, 1.0)]
[r["status"] for r in sweep]
""",
    """
# NBVAL_CHECK_OUTPUT
print(len(sweep), {r["status"] for r in sweep})
""",
    "## All runs of a stage",
    """
rows = [{"id": r["id"], "status": r["status"], "duration_s": r["duration_s"],
         **{f"param.{k}": v for k, v in r["parameters"].items()},
         **{f"metric.{k}": v for k, v in r["metrics"].items()}}
        for r in list_records(stage="sample")]
runs = pd.DataFrame(rows).set_index("id")
runs.tail()
""",
    "## One run in detail",
    """
run = nbops.load_run(sweep[-1]["id"])
print(run.parameters)
print(run.outputs)
print(run.artifacts[:6])
model = run.load_model()  # files are re-hashed against the record before unpickling
model
""",
    "## Compare the sweep",
    """
compared = pd.DataFrame([{"C": r["parameters"]["C"], **r["metrics"]} for r in sweep]).set_index("C")
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
compared[["accuracy", "f1_macro"]].plot.bar(ax=left, ylim=(0.8, 1.0), title="held-out scores")
for r in sweep:
    history = nbops.load_run(r["id"]).metric_history("learning_curve_accuracy")
    right.plot([p["step"] for p in history], [p["value"] for p in history], marker="o",
               label=f"C={r['parameters']['C']}")
right.set(title="learning curve", xlabel="step", ylabel="accuracy")
right.legend()
compared
""",
)


if __name__ == "__main__":
    import sys

    from checked_outputs import store_checked_outputs

    if "--outputs" in sys.argv:
        for name in ("quickstart", "run_explorer"):
            store_checked_outputs(OUT / f"{name}.ipynb")
