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
# # Stage `prepare`
#
# Load the data (a bundled scikit-learn dataset, or a CSV/Parquet file), check its schema, split it into train/test/reference with a seed, and write a simulated production batch with a controllable shift for the monitor stage.

# %% tags=["parameters"]
from pathlib import Path
from typing import Literal

dataset: Literal["breast_cancer", "wine", "iris", "diabetes"] = "breast_cancer"  # bundled dataset: breast_cancer, wine, iris or diabetes
data_path: Path = ""  # a CSV or Parquet file to use instead of the bundled dataset
target: str = "target"  # label column
required_columns: dict[str, str] = {}  # schema check: column -> numeric or categorical
n_rows: int = 0  # sample this many rows (0: all)
test_size: float = 0.2  # share of rows for the test split
reference_size: float = 0.2  # share of rows for the monitoring reference split
seed: int = 0  # random seed for sampling and splitting
shift: Literal["none", "feature", "missing", "new_category", "label"] = "none"  # production batch shift: none, feature, missing, new_category, label
shift_strength: float = 1.0  # how strong the shift is (in standard deviations / shares)

# %%
import hashlib
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

import nbops
from nbops.datasets import check_schema, column_kinds, load_bundled, load_table, task_of

# %% [markdown]
# ## Load and check

# %% tags=["nbval-check-output"]
df = load_table(data_path) if data_path else load_bundled(dataset, target)
check_schema(df, target, required_columns)
if n_rows and n_rows < len(df):
    df = df.sample(n=n_rows, random_state=seed).reset_index(drop=True)
task = task_of(df, target)
print(f"{len(df)} rows, {df.shape[1] - 1} features, task: {task}")

# %% [markdown]
# ## Split

# %% tags=["nbval-check-output"]
stratify = df[target] if task == "classification" else None
rest, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
share = reference_size / (1 - test_size)
stratify = rest[target] if task == "classification" else None
train, reference = train_test_split(rest, test_size=share, random_state=seed, stratify=stratify)
print(f"train {len(train)}, test {len(test)}, reference {len(reference)}")

# %% [markdown]
# ## Simulated production batch

# %%
rng = np.random.default_rng(seed + 1)
current = reference.sample(frac=1.0, replace=True, random_state=seed + 1).reset_index(drop=True)
numeric = [c for c, k in column_kinds(current).items() if k == "numeric" and c != target][:3]
if shift == "feature":
    for col in numeric:
        current[col] = current[col] + shift_strength * reference[col].std()
elif shift == "missing":
    for col in numeric:
        current.loc[rng.random(len(current)) < min(1.0, 0.3 * shift_strength), col] = np.nan
elif shift == "new_category" and "segment" in current:
    current["segment"] = current["segment"].where(
        rng.random(len(current)) >= min(1.0, 0.3 * shift_strength), "unseen")
elif shift == "label" and task == "classification":
    majority = current[target].value_counts().idxmax()
    drop = (current[target] == majority) & (rng.random(len(current)) < min(0.9, 0.6 * shift_strength))
    current = current[~drop].reset_index(drop=True)
elif shift != "none":
    raise ValueError(f"unknown shift {shift!r}; use none, feature, missing, new_category or label")
print(f"production batch: {len(current)} rows, shift: {shift}")


# %% [markdown]
# ## Record

# %%
def store(frame, name):
    frame.to_parquet(f"{name}.parquet", index=False)
    path = nbops.log_artifact(f"{name}.parquet")
    Path(f"{name}.parquet").unlink()
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()

paths = {name: store(frame, name) for name, frame in
         [("train", train), ("test", test), ("reference", reference), ("current", current)]}
for name, (path, _) in paths.items():
    nbops.output(f"{name}_path", path)
nbops.output("train_sha256", paths["train"][1])
nbops.output("test_sha256", paths["test"][1])
nbops.output("target", target)
nbops.output("task", task)
nbops.output("n_rows", int(len(df)))
nbops.log_metric("rows", len(df))
