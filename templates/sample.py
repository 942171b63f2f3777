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
# # Sample stage: train and score a classifier
#
# A small template that exercises the nbops contract: typed parameters, metrics with steps, a figure, a model and an output. Run it by hand, or with `nbops run sample`.

# %% tags=["parameters"]
dataset: str = "breast_cancer"  # bundled scikit-learn dataset: breast_cancer, iris or wine
test_size: float = 0.25  # share of rows held out for testing
C: float = 1.0  # inverse regularisation strength
max_iter: int = 200  # solver iterations
seed: int = 0  # random seed for the split

# %%
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import nbops

# %%
loaders = {'breast_cancer': datasets.load_breast_cancer, 'iris': datasets.load_iris,
           'wine': datasets.load_wine}
if dataset not in loaders:
    raise ValueError(f'unknown dataset {dataset!r}; choose one of {sorted(loaders)}')
X, y = loaders[dataset](return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=test_size, random_state=seed, stratify=y)
print(f'{len(X_train)} training rows, {len(X_test)} test rows')

# %%
model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
model.fit(X_train, y_train)
for step, n in enumerate([20, 40, 80, len(X_train)]):
    partial = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    partial.fit(X_train.iloc[:n], y_train.iloc[:n])
    nbops.log_metric('learning_curve_accuracy', accuracy_score(y_test, partial.predict(X_test)), step=step)
accuracy = accuracy_score(y_test, model.predict(X_test))
f1 = f1_score(y_test, model.predict(X_test), average='macro')
nbops.log_metric('accuracy', accuracy)
nbops.log_metric('f1_macro', f1)
print(f'accuracy={accuracy:.3f} f1_macro={f1:.3f}')

# %%
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(['accuracy', 'f1_macro'], [accuracy, f1])
ax.set_ylim(0, 1)
ax.set_title(f'{dataset}: held-out scores')
nbops.log_figure(fig, 'scores')
nbops.log_model(model, 'classifier', input_example=X_test.head(3))
nbops.output('accuracy', float(accuracy))
nbops.output('n_test_rows', int(len(X_test)))
