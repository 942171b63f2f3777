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
# # nbops quickstart
#
# Run a stage template and the lifecycle pipeline from Python, then look at what was
# recorded. Runs go to the project's `runs/` (the repository root's: its `nbops.yaml` makes it a project), or `$NBOPS_RUNS_DIR`; small parameters keep this quick.

# %%
import pandas as pd

import nbops

# %% [markdown]
# ## Run one stage

# %%
record = nbops.run("sample", {"C": 0.5, "dataset": "wine"})
record["status"], record["metrics"]["accuracy"], record["outputs"]

# %% tags=["nbval-check-output"]
print(record["status"], sorted(record["outputs"]))

# %% [markdown]
# ## Run the lifecycle pipeline
#
# `pipeline.yaml` (next to this notebook) chains prepare → train → evaluate → register →
# infer → monitor. Overrides use `STAGE.PARAMETER`. Run this cell twice: the second time
# every stage comes from the cache.

# %%
result = nbops.run_pipeline("pipeline.yaml", overrides=[
    ("prepare.n_rows", "300"), ("train.n_estimators", "20"), ("evaluate.permutation_repeats", "1")])
pd.DataFrame(result["stages"]).T

# %% tags=["nbval-check-output"]
print(result["status"], list(result["stages"]))

# %% [markdown]
# ## Inspect the records

# %%
evaluation = nbops.load_run(result["stages"]["evaluate"]["run_id"])
pd.Series(evaluation.metrics).head(8)

# %%
result["summary"]
