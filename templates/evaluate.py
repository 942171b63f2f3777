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
# # Stage `evaluate`
#
# Score a trained model on the held-out test split: metrics, plots (confusion matrix, ROC, calibration, permutation importance), metrics per slice of a grouping column (fairness gaps), and a pass/fail verdict against thresholds.

# %% tags=["parameters"]
from pathlib import Path

model_path: Path = ""  # model folder from the train stage ("" : fit a quick baseline here)
test_path: Path = ""  # test split from the prepare stage ("" : bundled breast_cancer)
target: str = "target"  # label column
group_column: str = "segment"  # slices for fairness gaps ("" : none)
thresholds: dict[str, float] = {"accuracy": 0.85, "roc_auc": 0.9}  # verdict: metric -> bound
permutation_repeats: int = 3  # repeats for permutation feature importance
seed: int = 0  # random seed

# %%
import hashlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance

import nbops
from nbops.datasets import baseline, load_table, task_of

# %%
if model_path:
    model = nbops.load_model(model_path)  # verified against its run record before unpickling
else:  # run by hand without a model: a quick baseline so the notebook still works
    model, _, baseline_test = baseline(target, seed)
if test_path:
    test = load_table(test_path)
    test_sha256 = hashlib.sha256(Path(test_path).read_bytes()).hexdigest()
else:
    test, test_sha256 = baseline_test, ""
X, y = test.drop(columns=[target]), test[target]
task = task_of(test, target)
print(f"{len(test)} test rows, task: {task}")


# %% [markdown]
# ## Held-out metrics

# %%
def score(X, y):
    if task == "regression":
        pred = model.predict(X)
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
                "mae": float(skm.mean_absolute_error(y, pred)), "r2": float(skm.r2_score(y, pred))}
    pred = model.predict(X)
    proba = model.predict_proba(X)
    out = {"accuracy": float(skm.accuracy_score(y, pred))}
    binary = proba.shape[1] == 2
    out["f1"] = float(skm.f1_score(y, pred, average="binary" if binary else "macro"))
    if len(np.unique(y)) > 1:
        out["roc_auc"] = float(skm.roc_auc_score(y, proba[:, 1]) if binary else
                               skm.roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_))
        out["log_loss"] = float(skm.log_loss(y, proba, labels=model.classes_))
    return out

scores = score(X, y)
for name, value in scores.items():
    nbops.log_metric(name, value)
pd.Series(scores, name="test")

# %% [markdown]
# ## Plots

# %%
if task == "classification":
    fig, ax = plt.subplots(figsize=(4, 4))
    skm.ConfusionMatrixDisplay.from_predictions(y, model.predict(X), ax=ax, colorbar=False)
    ax.set_title("confusion matrix (test split)")
    nbops.log_figure(fig, "confusion_matrix")
    if len(model.classes_) == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.RocCurveDisplay.from_predictions(y, model.predict_proba(X)[:, 1], ax=ax)
        ax.set_title("ROC curve (test split)")
        nbops.log_figure(fig, "roc")
        fig, ax = plt.subplots(figsize=(4, 4))
        CalibrationDisplay.from_predictions(y, model.predict_proba(X)[:, 1], n_bins=8, ax=ax)
        ax.set_title("calibration (test split)")
        nbops.log_figure(fig, "calibration")
importance = permutation_importance(model, X, y, n_repeats=permutation_repeats, random_state=seed)
top = pd.Series(importance.importances_mean, index=X.columns).sort_values().tail(10)
fig, ax = plt.subplots(figsize=(5, 4))
top.plot.barh(ax=ax, title="permutation importance (top 10)")
_ = nbops.log_figure(fig, "permutation_importance")  # (the path it returns is not an output)

# %% [markdown]
# ## Slices

# %%
slices = pd.DataFrame()
if group_column and group_column in test:
    rows = {str(g): score(part.drop(columns=[target]), part[target])
            for g, part in test.groupby(group_column) if len(part) >= 5}
    slices = pd.DataFrame(rows).T
    main = "rmse" if task == "regression" else "accuracy"
    for group, value in slices[main].items():
        nbops.log_metric(f"slice.{group}.{main}", value)
    nbops.log_metric(f"fairness_gap.{main}", float(slices[main].max() - slices[main].min()))
    slices.to_csv("slices.csv")
    nbops.log_artifact("slices.csv")
    Path("slices.csv").unlink()
slices

# %% [markdown]
# ## Verdict

# %%
lower_is_better = {"rmse", "mae", "log_loss"}
failures = []
for name, bound in thresholds.items():
    if name not in scores:
        failures.append(f"{name}: not computed for this task")
    elif (scores[name] > bound) if name in lower_is_better else (scores[name] < bound):
        failures.append(f"{name} {scores[name]:.4f} {'>' if name in lower_is_better else '<'} {bound}")
verdict = "fail" if failures else "pass"
print(f"verdict: {verdict}" + (f" ({'; '.join(failures)})" if failures else ""))
nbops.output("verdict", verdict)
nbops.output("failures", failures)
nbops.output("metrics", scores)
nbops.output("model_path", model_path)
nbops.output("test_sha256", test_sha256)
nbops.output("evaluate_run", nbops.current_run_id())
