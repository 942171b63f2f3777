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
# # Stage `infer`
#
# Batch scoring with a registered model chosen by alias or version; the input is checked against the model's signature, and the predictions are recorded.

# %% tags=["parameters"]
from pathlib import Path

model_name: str = ""  # registered model name ("" : a quick baseline fitted here)
alias: str = "champion"  # alias to score with (ignored when version is set)
version: int | None = None  # a registered version number
input_path: Path = ""  # batch to score, CSV or Parquet ("" : a sample of the bundled data)
target: str = "target"  # label column, kept beside the predictions when present

# %%
from pathlib import Path

import pandas as pd
from mlflow.models import Model

import nbops
from nbops.datasets import load_bundled, load_table
from nbops.tracking import registry

# %%
batch = load_table(input_path) if input_path else load_bundled("breast_cancer", target).sample(50, random_state=0)
if model_name:
    chosen = (registry.get_version(model_name, version) if version is not None
              else registry.version_by_alias(model_name, alias))
    if chosen is None:
        raise LookupError(f"model {model_name!r} has no alias {alias!r}: register a version "
                          "first, or pass version")
    model_path, model_version = chosen["tags"]["nbops.model_path"], chosen["version"]
else:  # run by hand: a quick baseline, logged like a trained model
    from nbops.datasets import baseline as make_baseline
    baseline, fit_part, _ = make_baseline(target)
    model_path = str(nbops.log_model(baseline, "model", input_example=fit_part.drop(columns=[target]).head(3)))
    model_version = 0
# a registered model is verified against its run record before it is unpickled
model = nbops.load_model(model_path) if model_name else baseline
print(f"model {model_name or 'baseline'} v{model_version}; {len(batch)} rows to score")

# %% [markdown]
# ## Check the input against the model signature

# %%
signature = Model.load(model_path).signature
expected = {spec.name: str(spec.type) for spec in signature.inputs.inputs} if signature else {}
missing = [c for c in expected if c not in batch.columns]
numeric_types = {"DataType.double", "DataType.float", "DataType.long", "DataType.integer"}
mistyped = [f"{c} (model expects {expected[c].split('.')[-1]}, got {batch[c].dtype})"
            for c in expected if c in batch.columns
            and (expected[c] in numeric_types) != pd.api.types.is_numeric_dtype(batch[c])]
if missing or mistyped:
    raise ValueError("input does not match the model signature: "
                     + "; ".join(filter(None, [missing and f"missing columns: {', '.join(missing)}",
                                               mistyped and f"mistyped columns: {', '.join(mistyped)}"])))
X = batch[list(expected)] if expected else batch.drop(columns=[target], errors="ignore")

# %%
scored = batch.copy()
scored["prediction"] = model.predict(X)
if hasattr(model, "predict_proba"):
    proba = model.predict_proba(X)
    if proba.shape[1] == 2:
        scored["probability"] = proba[:, 1]
scored.to_parquet("predictions.parquet", index=False)
stored = nbops.log_artifact("predictions.parquet")
Path("predictions.parquet").unlink()
nbops.log_metric("rows_scored", len(scored))
nbops.output("predictions_path", str(stored))
nbops.output("n_rows", int(len(scored)))
nbops.output("model_name", model_name)
nbops.output("version", model_version)
nbops.output("model_path", model_path)
scored.head()
