"""Write the stage templates in templates/ (kept as a script so they review as code).

    .venv/bin/python scripts/build_templates.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat

OUT = Path(__file__).resolve().parents[1] / "templates"


def template(name: str, description: str, outputs: list[str], params: str,
             *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["nbops"] = {"stage": name, "outputs": outputs, "description": description}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Stage `{name}`\n\n{description}"),
                nbformat.v4.new_code_cell(params.strip() + "\n",
                                          metadata={"tags": ["parameters"]})]
    for source in cells:
        if source.startswith("## "):
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(source.strip()))
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"
    nbformat.write(nb, OUT / f"{name}.ipynb")
    BUILT.append(OUT / f"{name}.ipynb")


BUILT: list[Path] = []


template(
    "prepare",
    "Load the data (a bundled scikit-learn dataset, or a CSV/Parquet file), check its "
    "schema, split it into train/test/reference with a seed, and write a simulated "
    "production batch with a controllable shift for the monitor stage.",
    ["train_path", "test_path", "reference_path", "current_path", "target", "task",
     "train_sha256", "test_sha256", "n_rows"],
    '''
dataset: str = "breast_cancer"  # bundled dataset: breast_cancer, wine, iris or diabetes
data_path: str = ""  # a CSV or Parquet file to use instead of the bundled dataset
target: str = "target"  # label column
required_columns: dict[str, str] = {}  # schema check: column -> numeric or categorical
n_rows: int = 0  # sample this many rows (0: all)
test_size: float = 0.2  # share of rows for the test split
reference_size: float = 0.2  # share of rows for the monitoring reference split
seed: int = 0  # random seed for sampling and splitting
shift: str = "none"  # production batch shift: none, feature, missing, new_category, label
shift_strength: float = 1.0  # how strong the shift is (in standard deviations / shares)
''',
    '''
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

import nbops
from nbops.datasets import check_schema, column_kinds, load_bundled, load_table, task_of
''',
    "## Load and check",
    '''
# NBVAL_CHECK_OUTPUT
df = load_table(data_path) if data_path else load_bundled(dataset, target)
check_schema(df, target, required_columns)
if n_rows and n_rows < len(df):
    df = df.sample(n=n_rows, random_state=seed).reset_index(drop=True)
task = task_of(df, target)
print(f"{len(df)} rows, {df.shape[1] - 1} features, task: {task}")
''',
    "## Split",
    '''
# NBVAL_CHECK_OUTPUT
stratify = df[target] if task == "classification" else None
rest, test = train_test_split(df, test_size=test_size, random_state=seed, stratify=stratify)
share = reference_size / (1 - test_size)
stratify = rest[target] if task == "classification" else None
train, reference = train_test_split(rest, test_size=share, random_state=seed, stratify=stratify)
print(f"train {len(train)}, test {len(test)}, reference {len(reference)}")
''',
    "## Simulated production batch",
    '''
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
''',
    "## Record",
    '''
def store(frame, name):
    frame.to_parquet(f"{name}.parquet", index=False)
    path = nbops.log_artifact(f"{name}.parquet")
    Path(f"{name}.parquet").unlink()
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()

paths = {name: store(frame, name) for name, frame in
         [("train", train), ("test", test), ("reference", reference), ("current", current)]}
for name, (path, digest) in paths.items():
    nbops.output(f"{name}_path", path)
nbops.output("train_sha256", paths["train"][1])
nbops.output("test_sha256", paths["test"][1])
nbops.output("target", target)
nbops.output("task", task)
nbops.output("n_rows", int(len(df)))
nbops.log_metric("rows", len(df))
''',
)

template(
    "train",
    "Train a scikit-learn model (logistic regression, random forest, gradient boosting) "
    "or a PyTorch MLP on the train split, logging per-iteration metrics, and save it with "
    "nbops.log_model.",
    ["model_path", "train_run", "model_kind", "train_accuracy"],
    '''
train_path: str = ""  # train split from the prepare stage ("" : bundled breast_cancer)
target: str = "target"  # label column
model: str = "logreg"  # logreg, random_forest, gradient_boosting or torch_mlp
C: float = 1.0  # logreg: inverse regularisation strength
n_estimators: int = 100  # random_forest / gradient_boosting: number of trees
max_depth: int | None = None  # random_forest: tree depth (None: unlimited)
learning_rate: float = 0.1  # gradient_boosting / torch_mlp: step size
epochs: int = 30  # torch_mlp: training epochs
hidden: int = 32  # torch_mlp: hidden units
seed: int = 0  # random seed
''',
    '''
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import nbops
from nbops.datasets import column_kinds, load_bundled, load_table
''',
    '''
# NBVAL_CHECK_OUTPUT
train = load_table(train_path) if train_path else load_bundled("breast_cancer", target)
X, y = train.drop(columns=[target]), train[target]
kinds = column_kinds(X)
numeric = [c for c, k in kinds.items() if k == "numeric"]
categorical = [c for c, k in kinds.items() if k == "categorical"]
print(f"{len(X)} rows; {len(numeric)} numeric and {len(categorical)} categorical features")
''',
    '''
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
''',
    '''
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
''',
    '''
stored = nbops.log_model(estimator, "model", input_example=X.head(3))
nbops.output("model_path", str(stored))
nbops.output("train_run", nbops.current_run_id())
nbops.output("model_kind", model)
nbops.output("train_accuracy", float(train_accuracy))
''',
)

template(
    "evaluate",
    "Score a trained model on the held-out test split: metrics, plots (confusion matrix, "
    "ROC, calibration, permutation importance), metrics per slice of a grouping column "
    "(fairness gaps), and a pass/fail verdict against thresholds.",
    ["verdict", "failures", "metrics", "model_path", "test_sha256", "evaluate_run"],
    '''
model_path: str = ""  # model folder from the train stage ("" : fit a quick baseline here)
test_path: str = ""  # test split from the prepare stage ("" : bundled breast_cancer)
target: str = "target"  # label column
group_column: str = "segment"  # slices for fairness gaps ("" : none)
thresholds: dict[str, float] = {"accuracy": 0.85, "roc_auc": 0.9}  # verdict: metric -> bound
permutation_repeats: int = 3  # repeats for permutation feature importance
seed: int = 0  # random seed
''',
    '''
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
''',
    '''
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
''',
    "## Held-out metrics",
    '''
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
''',
    "## Plots",
    '''
if task == "classification":
    fig, ax = plt.subplots(figsize=(4, 4))
    skm.ConfusionMatrixDisplay.from_predictions(y, model.predict(X), ax=ax, colorbar=False)
    nbops.log_figure(fig, "confusion_matrix")
    if len(model.classes_) == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        skm.RocCurveDisplay.from_predictions(y, model.predict_proba(X)[:, 1], ax=ax)
        nbops.log_figure(fig, "roc")
        fig, ax = plt.subplots(figsize=(4, 4))
        CalibrationDisplay.from_predictions(y, model.predict_proba(X)[:, 1], n_bins=8, ax=ax)
        nbops.log_figure(fig, "calibration")
importance = permutation_importance(model, X, y, n_repeats=permutation_repeats, random_state=seed)
top = pd.Series(importance.importances_mean, index=X.columns).sort_values().tail(10)
fig, ax = plt.subplots(figsize=(5, 4))
top.plot.barh(ax=ax, title="permutation importance (top 10)")
nbops.log_figure(fig, "permutation_importance")
''',
    "## Slices",
    '''
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
''',
    "## Verdict",
    '''
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
''',
)

template(
    "register",
    "Register the evaluated model in the MLflow Model Registry, only when the evaluation "
    "verdict passed, with lineage tags and the alias `challenger`; promote it to "
    "`champion` when it beats the current champion on the same test data (or when there "
    "is none).",
    ["model_name", "version", "aliases", "promoted", "champion_version", "score",
     "champion_score"],
    """
model_path: str = ""  # model folder from the train stage ("" : a quick baseline made here)
verdict: str = ""  # evaluation verdict: only "pass" is registered
test_path: str = ""  # test split: challenger and champion are compared on it
target: str = "target"  # label column
model_name: str = "nbops-model"  # registered model name
primary_metric: str = "roc_auc"  # comparison metric: roc_auc, accuracy, f1 (higher wins) or rmse, mae (lower wins)
test_sha256: str = ""  # lineage: test data hash
train_sha256: str = ""  # lineage: train data hash
train_run: str = ""  # lineage: nbops run id of the train stage
evaluate_run: str = ""  # lineage: nbops run id of the evaluate stage
""",
    """
import json
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn import metrics as skm

import nbops
from nbops.datasets import load_table
""",
    """
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
train_record = json.loads((train_run_dir / "run.json").read_text())
source_run = train_record["mlflow"]["run_id"]
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
""",
    "## Register and promote",
    """
client = MlflowClient(nbops.tracking_uri())
try:
    client.create_registered_model(model_name, description="Registered by the nbops register stage")
except MlflowException as exc:
    if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
        raise
tags = {"nbops.model_path": str(model_path), "nbops.train_run": train_run,
        "nbops.evaluate_run": evaluate_run, "nbops.register_run": nbops.current_run_id(),
        "nbops.test_sha256": test_sha256, "nbops.train_sha256": train_sha256,
        f"nbops.score.{primary_metric}": str(challenger_score)}
version = client.create_model_version(model_name, source=f"runs:/{source_run}/models/model",
                                      run_id=source_run, tags=tags)
client.set_registered_model_alias(model_name, "challenger", version.version)
try:
    champion = client.get_model_version_by_alias(model_name, "champion")
except MlflowException:
    champion = None
champion_score = None
if champion is not None:
    champion_score = score(nbops.load_model(champion.tags["nbops.model_path"]))
    print(f"champion v{champion.version} {primary_metric}: {champion_score:.4f}")
better = champion_score is None or (challenger_score < champion_score if lower_is_better
                                    else challenger_score >= champion_score)
if better:
    client.set_registered_model_alias(model_name, "champion", version.version)
champion_version = int(version.version) if better else int(champion.version)
aliases = ["challenger"] + (["champion"] if better else [])
print(f"{model_name} v{version.version}: {', '.join(aliases)}"
      + ("" if better else f" (champion stays v{champion_version})"))
nbops.log_metric(f"challenger_{primary_metric}", challenger_score)
nbops.output("model_name", model_name)
nbops.output("version", int(version.version))
nbops.output("aliases", aliases)
nbops.output("promoted", bool(better))
nbops.output("champion_version", champion_version)
nbops.output("score", challenger_score)
nbops.output("champion_score", champion_score)
""",
)

template(
    "infer",
    "Batch scoring with a registered model chosen by alias or version; the input is "
    "checked against the model's signature, and the predictions are recorded.",
    ["predictions_path", "n_rows", "model_name", "version", "model_path"],
    """
model_name: str = ""  # registered model name ("" : a quick baseline fitted here)
alias: str = "champion"  # alias to score with (ignored when version is set)
version: int | None = None  # a registered version number
input_path: str = ""  # batch to score, CSV or Parquet ("" : a sample of the bundled data)
target: str = "target"  # label column, kept beside the predictions when present
""",
    """
from pathlib import Path

import pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient

import nbops
from nbops.datasets import load_table
""",
    """
from nbops.datasets import load_bundled
batch = load_table(input_path) if input_path else load_bundled("breast_cancer", target).sample(50, random_state=0)
if model_name:
    client = MlflowClient(nbops.tracking_uri())
    chosen = (client.get_model_version(model_name, str(version)) if version is not None
              else client.get_model_version_by_alias(model_name, alias))
    model_path, model_version = chosen.tags["nbops.model_path"], int(chosen.version)
else:  # run by hand: a quick baseline, logged like a trained model
    from nbops.datasets import baseline as make_baseline
    baseline, fit_part, _ = make_baseline(target)
    model_path = str(nbops.log_model(baseline, "model", input_example=fit_part.drop(columns=[target]).head(3)))
    model_version = 0
# a registered model is verified against its run record before it is unpickled
model = nbops.load_model(model_path) if model_name else baseline
print(f"model {model_name or 'baseline'} v{model_version}; {len(batch)} rows to score")
""",
    "## Check the input against the model signature",
    """
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
""",
    """
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
""",
)

template(
    "monitor",
    "Compare the reference data with a current batch (features, predictions, and labels "
    "when present), show a drift report, and map the drift to an action (none, warn, "
    "retrain, experiment).",
    ["action", "share_drifted", "drifted_columns", "report_path"],
    """
reference_path: str = ""  # reference split from prepare ("" : bundled data, no drift)
current_path: str = ""  # current batch, e.g. infer's predictions ("" : bundled data, shifted)
model_path: str = ""  # model used to score the reference for prediction drift ("" : skip)
target: str = "target"  # label column (performance drift when present on both sides)
prediction_column: str = "prediction"  # prediction column of the current batch
alpha: float = 0.05  # significance level after Benjamini-Hochberg adjustment
policy_measure: str = "auto"  # what the action tiers apply to: auto, share or performance
""",
    """
import json
from pathlib import Path

import pandas as pd
from IPython.display import display

import nbops
from nbops.datasets import load_bundled, load_table
from nbops.drift import compare
""",
    """
# NBVAL_CHECK_OUTPUT
if reference_path:
    reference = load_table(reference_path)
else:  # by hand: bundled data against a shifted copy of itself
    reference = load_bundled("breast_cancer", target)
if current_path:
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
""",
    "## Drift report",
    """
report = compare(reference, current, target=target,
                 prediction=prediction_column if prediction_column in current else None,
                 alpha=alpha, measure=policy_measure)
drifted = [name for name, col in report.columns.items() if col["drift"] and col["role"] == "feature"]
display(report.to_widget())  # a static copy is stored as drift.html
print(f"action: {report.action} ({report.share_drifted:.1%} of features drifted; "
      f"measure: {report.measure})")
""",
    """
Path("drift.json").write_text(json.dumps(report.to_dict(), indent=2))
Path("drift.html").write_text(report.to_html())
stored = nbops.log_artifact("drift.json")
nbops.log_artifact("drift.html")
Path("drift.json").unlink()
Path("drift.html").unlink()
nbops.log_metric("share_drifted", report.share_drifted)
for name, col in report.columns.items():
    nbops.log_metric(f"drift.{name}.effect_size", col["effect_size"])
if report.performance and report.performance.get("drop") is not None:
    nbops.log_metric("performance_drop", report.performance["drop"])
nbops.output("action", report.action)
nbops.output("share_drifted", report.share_drifted)
nbops.output("drifted_columns", drifted)
nbops.output("report_path", str(stored))
""",
)


if __name__ == "__main__":
    import sys

    from checked_outputs import store_checked_outputs

    if "--outputs" in sys.argv:
        for built in BUILT:
            store_checked_outputs(built)
