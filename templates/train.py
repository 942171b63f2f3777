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
# # Stage `train`
#
# Train a scikit-learn model (logistic regression, random forest, gradient boosting) or a PyTorch MLP on the train split, logging per-iteration metrics, and save it with nbops.log_model.

# %% tags=["parameters"]
from pathlib import Path
from typing import Literal

train_path: Path = ""  # train split from the prepare stage ("" : bundled breast_cancer)
target: str = "target"  # label column
model: Literal["logreg", "random_forest", "gradient_boosting", "torch_mlp"] = "logreg"  # logreg, random_forest, gradient_boosting or torch_mlp
C: float = 1.0  # logreg: inverse regularisation strength
n_estimators: int = 100  # random_forest / gradient_boosting: number of trees
max_depth: int | None = None  # random_forest: tree depth (None: unlimited)
learning_rate: float = 0.1  # gradient_boosting / torch_mlp: step size
epochs: int = 30  # torch_mlp: training epochs
hidden: int = 32  # torch_mlp: hidden units
seed: int = 0  # random seed
cv_folds: int = 0  # 2 or more: also score the model by stratified k-fold cross-validation (cv_accuracy: what a sweep should maximise; train_accuracy favours overfitting)

# %%
import numpy as np
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import nbops
from nbops.datasets import column_kinds, load_bundled, load_table

# %% tags=["nbval-check-output"]
train = load_table(train_path) if train_path else load_bundled("breast_cancer", target)
X, y = train.drop(columns=[target]), train[target]
kinds = column_kinds(X)
numeric = [c for c, k in kinds.items() if k == "numeric"]
categorical = [c for c, k in kinds.items() if k == "categorical"]
print(f"{len(X)} rows; {len(numeric)} numeric and {len(categorical)} categorical features")


# %%
def features(scale):
    steps = [("num", StandardScaler() if scale else "passthrough", numeric)]
    if categorical:
        steps.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical))
    return ColumnTransformer(steps)

if model == "logreg":
    estimator = make_pipeline(features(True), LogisticRegression(C=C, max_iter=1000))
elif model == "random_forest":
    estimator = make_pipeline(features(False), RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1))
elif model == "gradient_boosting":
    estimator = make_pipeline(features(False), GradientBoostingClassifier(
        n_estimators=n_estimators, learning_rate=learning_rate, random_state=seed))
elif model == "torch_mlp":
    from nbops.torch_models import TorchMLPClassifier
    estimator = make_pipeline(features(True), TorchMLPClassifier(
        hidden=hidden, epochs=epochs, lr=learning_rate, seed=seed))
else:
    raise ValueError(f"unknown model {model!r}; use logreg, random_forest, gradient_boosting or torch_mlp")

# %%
if model == "torch_mlp":
    encoded = estimator[0].fit_transform(X)
    estimator[-1].fit(encoded, y, on_epoch=lambda e, loss: nbops.log_metric("train_loss", loss, step=e))
else:
    estimator.fit(X, y)
if model == "gradient_boosting":
    booster = estimator[-1]
    for i, loss in enumerate(booster.train_score_):
        nbops.log_metric("train_loss", float(loss), step=i)
if model == "random_forest":
    encoded = estimator[0].transform(X)
    votes = np.zeros((len(X), len(estimator[-1].classes_)))
    for i, tree in enumerate(estimator[-1].estimators_):
        votes += tree.predict_proba(encoded)
        acc = accuracy_score(y, estimator[-1].classes_[votes.argmax(axis=1)])
        nbops.log_metric("train_accuracy_by_trees", acc, step=i + 1)
train_accuracy = accuracy_score(y, estimator.predict(X))
nbops.log_metric("train_accuracy", train_accuracy)
nbops.log_params(model=model, n_features=X.shape[1])
print(f"{model}: train accuracy {train_accuracy:.3f}")
cv_accuracy = None
if cv_folds == 1 or cv_folds < 0:
    raise ValueError(f"cv_folds must be 0 (no cross-validation) or at least 2, not {cv_folds}")
if cv_folds > 1:
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    cv_accuracy = float(cross_val_score(clone(estimator), X, y, cv=folds, scoring="accuracy").mean())
    nbops.log_metric("cv_accuracy", cv_accuracy)
    print(f"{model}: {cv_folds}-fold cross-validated accuracy {cv_accuracy:.3f}")

# %%
stored = nbops.log_model(estimator, "model", input_example=X.head(3))
nbops.output("model_path", str(stored))
nbops.output("train_run", nbops.current_run_id())
nbops.output("model_kind", model)
nbops.output("train_accuracy", float(train_accuracy))
nbops.output("cv_accuracy", cv_accuracy)
