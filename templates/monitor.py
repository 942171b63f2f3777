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
# # Stage `monitor`
#
# Compare the reference data with a current batch (features, predictions, and labels when present), show a drift report, and map the drift to an action (none, warn, retrain, experiment).

# %% tags=["parameters"]
from pathlib import Path
from typing import Literal

reference_path: Path = ""  # reference split from prepare ("" : bundled data, no drift)
current_path: Path = ""  # current batch: a file (e.g. infer's predictions) or a prediction log folder of nbops serve ("" : bundled data, shifted)
current_window: str = ""  # with a prediction log: which rows, e.g. 6h, 7d or 2026-12-01T00:00/2026-12-02T00:00 ("" : all)
model_path: Path = ""  # model used to score the reference for prediction drift ("" : skip)
target: str = "target"  # label column (performance drift when present on both sides)
prediction_column: str = "prediction"  # prediction column of the current batch
alpha: float = 0.05  # significance level after Benjamini-Hochberg adjustment
policy_measure: Literal["auto", "share", "performance"] = "auto"  # what the action tiers apply to: auto, share or performance

# %%
import json
from pathlib import Path

from IPython.display import display

import nbops
from nbops.datasets import load_bundled, load_table
from nbops.drift import compare
from nbops.serving.predlog import META, read_log

# %% tags=["nbval-check-output"]
if reference_path:
    reference = load_table(reference_path)
else:  # by hand: bundled data against a shifted copy of itself
    reference = load_bundled("breast_cancer", target)
if current_path and Path(current_path).is_dir():  # what nbops serve answered, in a window
    logged = read_log(current_path, current_window)
    current = logged[logged["_variant"] != "shadow"].drop(columns=list(META))  # rows answered
    print(f"prediction log {current_path}, window {current_window or 'all'}")
elif current_path:
    current = load_table(current_path)
else:
    current = reference.sample(frac=1.0, random_state=1).reset_index(drop=True)
    current[current.columns[0]] = current[current.columns[0]] * 1.3
current = current.drop(columns=["probability"], errors="ignore")
if model_path and prediction_column in current:
    model = nbops.load_model(model_path)
    reference = reference.copy()
    reference[prediction_column] = model.predict(reference.drop(columns=[target], errors="ignore"))
print(f"reference {len(reference)} rows, current {len(current)} rows")

# %% [markdown]
# ## Drift report

# %%
report = compare(reference, current,
                 target=target if target in reference or target in current else None,
                 prediction=prediction_column if prediction_column in current else None,
                 alpha=alpha, measure=policy_measure)
drifted = [name for name, col in report.columns.items() if col["drift"] and col["role"] == "feature"]
display(report)  # the live widget, with a static copy for readers without a kernel
print(f"action: {report.action} ({report.share_drifted:.1%} of features drifted; "
      f"measure: {report.measure})")

# %%
Path("drift.json").write_text(json.dumps(report.to_dict(), indent=2))
Path("drift.html").write_text(report.to_html())
stored = nbops.log_artifact("drift.json")
nbops.log_artifact("drift.html")
Path("drift.json").unlink()
Path("drift.html").unlink()
# a few summary metrics; the per-column detail is the drift.json artifact, not 3 metrics a column
nbops.log_metric("share_drifted", report.share_drifted)
nbops.log_metric("n_drifted", len(drifted))
nbops.log_metric("max_effect_size", max((c["effect_size"] for c in report.columns.values()), default=0.0))
if report.performance and report.performance.get("drop") is not None:
    nbops.log_metric("performance_drop", report.performance["drop"])
nbops.output("action", report.action)
nbops.output("share_drifted", report.share_drifted)
nbops.output("drifted_columns", drifted)
nbops.output("report_path", str(stored))
