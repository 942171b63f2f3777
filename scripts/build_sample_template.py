"""Write templates/sample.ipynb (kept as a script so the template is reviewable as code)."""
from pathlib import Path

import nbformat

cells = [
    nbformat.v4.new_markdown_cell(
        "# Sample stage: train and score a classifier\n\n"
        "A small template that exercises the nbops contract: typed parameters, metrics with "
        "steps, a figure, a model and an output. Run it by hand, or with `nbops run sample`."),
    nbformat.v4.new_code_cell(
        'dataset: str = "breast_cancer"  # bundled scikit-learn dataset: breast_cancer, iris or wine\n'
        "test_size: float = 0.25  # share of rows held out for testing\n"
        "C: float = 1.0  # inverse regularisation strength\n"
        "max_iter: int = 200  # solver iterations\n"
        "seed: int = 0  # random seed for the split\n",
        metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "from sklearn import datasets\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.metrics import accuracy_score, f1_score\n"
        "from sklearn.model_selection import train_test_split\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import StandardScaler\n\n"
        "import nbops"),
    nbformat.v4.new_code_cell(
        "loaders = {'breast_cancer': datasets.load_breast_cancer, 'iris': datasets.load_iris,\n"
        "           'wine': datasets.load_wine}\n"
        "if dataset not in loaders:\n"
        "    raise ValueError(f'unknown dataset {dataset!r}; choose one of {sorted(loaders)}')\n"
        "X, y = loaders[dataset](return_X_y=True, as_frame=True)\n"
        "X_train, X_test, y_train, y_test = train_test_split(\n"
        "    X, y, test_size=test_size, random_state=seed, stratify=y)\n"
        "print(f'{len(X_train)} training rows, {len(X_test)} test rows')"),
    nbformat.v4.new_code_cell(
        "model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))\n"
        "model.fit(X_train, y_train)\n"
        "for step, n in enumerate([20, 40, 80, len(X_train)]):\n"
        "    partial = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))\n"
        "    partial.fit(X_train.iloc[:n], y_train.iloc[:n])\n"
        "    nbops.log_metric('learning_curve_accuracy', accuracy_score(y_test, partial.predict(X_test)), step=step)\n"
        "accuracy = accuracy_score(y_test, model.predict(X_test))\n"
        "f1 = f1_score(y_test, model.predict(X_test), average='macro')\n"
        "nbops.log_metric('accuracy', accuracy)\n"
        "nbops.log_metric('f1_macro', f1)\n"
        "print(f'accuracy={accuracy:.3f} f1_macro={f1:.3f}')"),
    nbformat.v4.new_code_cell(
        "fig, ax = plt.subplots(figsize=(4, 3))\n"
        "ax.bar(['accuracy', 'f1_macro'], [accuracy, f1])\n"
        "ax.set_ylim(0, 1)\n"
        "ax.set_title(f'{dataset}: held-out scores')\n"
        "nbops.log_figure(fig, 'scores')\n"
        "nbops.log_model(model, 'classifier', input_example=X_test.head(3))\n"
        "nbops.output('accuracy', float(accuracy))\n"
        "nbops.output('n_test_rows', int(len(X_test)))"),
]
nb = nbformat.v4.new_notebook(cells=cells)
for index, cell in enumerate(nb.cells):
    cell.id = f"cell-{index}"
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nb.metadata["nbops"] = {"stage": "sample", "outputs": ["accuracy", "n_test_rows"],
                        "description": "Train and score a small classifier on bundled data."}
out = Path(__file__).resolve().parents[1] / "templates" / "sample.ipynb"
nbformat.write(nb, out)
print(out)
