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
# # Stage `register`
#
# Register the evaluated model in the MLflow Model Registry, only when the evaluation verdict passed, with lineage tags and the alias `challenger`; promote it to `champion` when it is strictly better than the current champion on the same test data (or when there is none: a tie keeps the champion). A model the registry already holds (the same model files, or the same run's model folder, from any copy of the project) is reused, never registered again.

# %% tags=["parameters"]
from pathlib import Path
from typing import Literal

model_path: Path = ""  # model folder from the train stage ("" : a quick baseline made here)
verdict: str = ""  # evaluation verdict: only "pass" is registered
test_path: Path = ""  # test split: challenger and champion are compared on it
target: str = "target"  # label column
model_name: str = "nbops-model"  # registered model name
primary_metric: Literal["roc_auc", "accuracy", "f1", "rmse", "mae"] = "roc_auc"  # comparison metric: roc_auc, accuracy, f1 (higher wins) or rmse, mae (lower wins)
test_sha256: str = ""  # lineage: test data hash
train_sha256: str = ""  # lineage: train data hash
train_run: str = ""  # lineage: nbops run id of the train stage
evaluate_run: str = ""  # lineage: nbops run id of the evaluate stage

# %%
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

import nbops
from nbops.datasets import load_table
from nbops.errors import PromotionBlocked
from nbops.promotion.policy import beats
from nbops.promotion.registration import register_model
from nbops.promotion.service import promote
from nbops.tracking import registry

# %%
if not model_path:  # run by hand: train, test and judge a quick baseline so the notebook runs
    from nbops.datasets import baseline as make_baseline
    baseline, fit_part, test_part = make_baseline(target)
    model_path = str(nbops.log_model(baseline, "model", input_example=fit_part.drop(columns=[target]).head(3)))
    test_part.to_parquet("baseline_test.parquet", index=False)
    test_path = str(nbops.log_artifact("baseline_test.parquet"))
    Path("baseline_test.parquet").unlink()
    accuracy = baseline.score(test_part.drop(columns=[target]), test_part[target])
    verdict = "pass" if accuracy >= 0.85 else "fail"
    nbops.end_run()  # closes the by-hand run so its MLflow run exists for the registry
if verdict != "pass":
    raise RuntimeError(f"registration refused: the evaluation verdict is {verdict!r}, not 'pass'. "
                       "Improve the model or relax the evaluate thresholds, then run again.")
if not model_path or not test_path:
    raise ValueError("model_path and test_path are required (outputs of train/evaluate and prepare)")
train_run_dir = Path(model_path).parent.parent
source_run = nbops.tracked_run_id(train_run_dir)  # waits for a mirror still under way
test = load_table(test_path)
X, y = test.drop(columns=[target]), test[target]
lower_is_better = primary_metric in ("rmse", "mae")

def score(model):
    if primary_metric == "roc_auc":
        proba = model.predict_proba(X)
        return float(skm.roc_auc_score(y, proba[:, 1]) if proba.shape[1] == 2 else
                     skm.roc_auc_score(y, proba, multi_class="ovr", labels=model.classes_))
    pred = model.predict(X)
    fns = {"accuracy": skm.accuracy_score, "f1": lambda a, b: skm.f1_score(a, b, average="macro"),
           "rmse": lambda a, b: float(np.sqrt(skm.mean_squared_error(a, b))),
           "mae": skm.mean_absolute_error}
    if primary_metric not in fns:
        raise ValueError(f"unknown primary_metric {primary_metric!r}")
    return float(fns[primary_metric](y, pred))

challenger_score = score(nbops.load_model(model_path))
print(f"challenger {primary_metric}: {challenger_score:.4f}")

# %% [markdown]
# ## Register and promote

# %%
tags = {"nbops.train_run": train_run,
        "nbops.evaluate_run": evaluate_run, "nbops.register_run": nbops.current_run_id(),
        "nbops.test_sha256": test_sha256, "nbops.train_sha256": train_sha256,
        f"nbops.score.{primary_metric}": str(challenger_score)}
# the same model (its files' hashes, or the same run's model folder) is never registered twice,
# from any copy of the project: a re-run reuses the version that holds it
registration = register_model(model_name, model_path, run_id=source_run, tags=tags)
version, reused = registration["version"], registration["reused"]
if reused:
    print(f"{model_name} v{version} already holds this model ({registration['matched']}): reused, not registered again")
champion = registry.version_by_alias(model_name, "champion")
champion_score = None
if champion is not None and champion["version"] != version and not reused:
    champion_score = score(nbops.load_model(champion["tags"]["nbops.model_path"]))
    print(f"champion v{champion['version']} {primary_metric}: {champion_score:.4f}")
# strictly better only (a tie keeps the champion); a reused version was judged when it was
# registered: a re-run never moves the champion again
better = not reused and beats(challenger_score, champion_score, lower_is_better)
blocked = ""
if not reused and champion_score is not None and challenger_score == champion_score:
    # offline evidence cannot tell them apart: the champion stays; an A/B test can decide
    blocked = (f"v{version} ties champion v{champion['version']} on the same test data ({primary_metric} "
               f"{challenger_score:.4f} vs {champion_score:.4f}): not promoted; an A/B test can decide")
if better:  # through the project's promotion policy (nbops.yaml): evidence, approvals
    try:
        promote(model_name, version, "champion", reason=(
            f"{primary_metric} {challenger_score:.4f}" if champion is None else
            f"{primary_metric} {challenger_score:.4f} vs {champion_score:.4f} of v{champion['version']}"))
    except PromotionBlocked as exc:
        blocked = str(exc)
promoted = better and not blocked
now = registry.version_by_alias(model_name, "champion")  # what is true now, not what was cached
champion_version = now["version"] if now else None
aliases = registry.get_version(model_name, version)["aliases"]
print(f"{model_name} v{version}: {', '.join(aliases) or 'no alias'}"
      + ("" if champion_version == version else f" (champion is v{champion_version})"))
if blocked:
    print(blocked)
nbops.log_metric(f"challenger_{primary_metric}", challenger_score)
nbops.output("model_name", model_name)
nbops.output("version", version)
nbops.output("reused", bool(reused))  # True: an existing version already held this model
nbops.output("aliases", aliases)
nbops.output("promoted", bool(promoted))
nbops.output("champion_version", champion_version)
nbops.output("score", challenger_score)
nbops.output("champion_score", champion_score)
nbops.output("blocked", blocked)  # why a challenger not worse than the champion was not promoted (the policy's evidence or approvals, or a tie)
