# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Run explorer
#
# Load runs, inspect their parameters, metrics, outputs, artifacts and models, and compare
# several runs side by side.

# %%
import matplotlib.pyplot as plt
import pandas as pd

import nbops

# %% [markdown]
# ## A small sweep to explore

# %%
sweep = [nbops.run("sample", {"C": c, "dataset": "breast_cancer"}) for c in (0.01, 0.1, 1.0)]
[r["status"] for r in sweep]

# %% tags=["nbval-check-output"]
print(len(sweep), {r["status"] for r in sweep})

# %% [markdown]
# ## All runs of a stage

# %%
rows = [{"id": r["id"], "status": r["status"], "duration_s": r["duration_s"],
         **{f"param.{k}": v for k, v in r["parameters"].items()},
         **{f"metric.{k}": v for k, v in r["metrics"].items()}}
        for r in nbops.list_runs(stage="sample")]
runs = pd.DataFrame(rows).set_index("id")
runs.tail()

# %% [markdown]
# ## One run in detail

# %%
run = nbops.load_run(sweep[-1]["id"])
print(run.parameters)
print(run.outputs)
print(run.artifacts[:6])
model = run.load_model()  # files are re-hashed against the record before unpickling
model

# %% [markdown]
# ## Compare the sweep

# %%
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
