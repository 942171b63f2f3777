"""Data for the stage templates: scikit-learn's bundled datasets or a CSV/Parquet file.

Nothing is downloaded. Bundled datasets get a categorical ``segment`` column (terciles of
their first feature) so that slice metrics and new-category shifts have something to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

BUNDLED = ("breast_cancer", "wine", "iris", "diabetes")


def table_format(path: str | Path) -> Literal["parquet", "csv"]:
    """Which kind of table file ``path`` is.

    Raises:
        FileNotFoundError: no such file. ValueError: neither CSV nor Parquet.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data file {file} does not exist")
    if file.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    if file.suffix.lower() in (".csv", ".txt"):
        return "csv"
    raise ValueError(f"cannot read {file}: use a .csv or .parquet file")


def load_table(path: str | Path) -> Any:
    """A DataFrame from a CSV or Parquet file, with a clear error when it is missing."""
    import pandas as pd

    file = Path(path)
    check_header(file)
    if table_format(file) == "parquet":
        return pd.read_parquet(file)
    return pd.read_csv(file)


def check_header(file: Path) -> None:
    """Refuse a table whose columns repeat a name, in every reader's path (exact loading
    and streaming alike): pandas renames duplicate CSV columns (``a``, ``a.1``) without a
    word, and pyarrow fails on a Parquet file's repeated field with a message naming none.

    Raises:
        ValueError: naming the repeated columns.
    """
    if table_format(file) == "parquet":
        import pyarrow.parquet as pq

        header = [str(name) for name in pq.read_schema(file).names]
    else:
        import csv

        with file.open(newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ValueError(f"{file} has duplicate column names: {', '.join(duplicated)}; "
                         "rename them so each is unique")


def load_bundled(name: str, target: str = "target") -> Any:
    """One of scikit-learn's bundled datasets as a DataFrame with ``target`` and ``segment``."""
    import pandas as pd
    from sklearn import datasets

    if name not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; choose one of {', '.join(BUNDLED)}"
                         " or give a data file")
    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    frame = frame.rename(columns={"target": target})
    first = frame.columns[0]
    frame["segment"] = pd.qcut(frame[first], 3, labels=["low", "mid", "high"]).astype(str)
    return frame


def column_kinds(frame: Any) -> dict[str, str]:
    """``numeric`` or ``categorical`` for each column."""
    import pandas as pd

    return {str(c): "numeric" if pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c]) else "categorical"
            for c in frame.columns}


def check_schema(frame: Any, target: str, required: dict[str, str]) -> None:
    """Raise ValueError naming every missing or mistyped column."""
    kinds = column_kinds(frame)
    missing = [c for c in [target, *required] if c not in kinds]
    mistyped = [f"{c} (expected {k}, found {kinds[c]})" for c, k in required.items()
                if c in kinds and k != kinds[c]]
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if mistyped:
        problems.append(f"mistyped columns: {', '.join(mistyped)}")
    if problems:
        raise ValueError(f"schema check failed: {'; '.join(problems)}. Fix the data or the "
                         "'target'/'required_columns' parameters.")


def task_of(frame: Any, target: str) -> str:
    """``classification`` for few distinct integer-like labels, else ``regression``."""
    labels = frame[target]
    few = labels.nunique() <= 20
    integral = labels.dtype.kind in "biuO" or bool((labels.dropna() % 1 == 0).all())
    return "classification" if few and integral else "regression"


def baseline(target: str = "target", seed: int = 0) -> tuple[Any, Any, Any]:
    """A quick logistic-regression baseline on bundled breast_cancer data.

    Templates run by hand without upstream stages use it so they still work standalone.

    Returns:
        (model, train, test): the fitted model and the split it was fitted and held out on.
    """
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    full = load_bundled("breast_cancer", target)
    train, test = train_test_split(full, test_size=0.2, random_state=seed)
    prep = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["segment"]),
                                   remainder=StandardScaler())
    model = make_pipeline(prep, LogisticRegression(max_iter=1000))
    model.fit(train.drop(columns=[target]), train[target])
    return model, train, test
