"""Column kinds and roles, by stated rules.

Kinds: ``numeric``, ``boolean``, ``datetime``, ``categorical``, ``text``.
- bool dtype → boolean; datetime dtype → datetime; other numeric dtypes → numeric.
- strings of which at least 95 % (of a sample) are ISO 8601 dates or date-times
  (``2024-05-01``, ``2024-05-01T12:00:00Z``) → datetime, parsed (as a CSV gives them).
- strings: ``text`` when the mean length is over 30 characters or most values contain a
  space and the column is high-cardinality (> 50 % distinct); otherwise categorical.
Roles: given explicitly (target, prediction, timestamp) or inferred:
- a datetime column is a ``timestamp``;
- a non-float column whose reference values are ≥ 95 % distinct (n ≥ 20) is an ``id``
  and is excluded: near-unique strings are never tested as categories;
- everything else is a ``feature``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

KINDS = ("numeric", "boolean", "datetime", "categorical", "text")
_ISO_PATTERN = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"


TOKEN = r"[^\W\d_]{2,}"  # words of two or more letters: numbers and ids are not vocabulary
TEXT_SAMPLE = 200_000  # rows tokenised per side, at most (a seeded sample beyond that)
MAX_VOCABULARY = 5_000  # tokens compared one by one; the rest are pooled


def token_counts(series: pd.Series) -> pd.Series:
    """Lower-cased word counts of a text column (on a seeded sample of at most
    ``TEXT_SAMPLE`` rows, so memory stays bounded)."""
    values = series.dropna().astype(str)
    if len(values) > TEXT_SAMPLE:
        values = values.sample(TEXT_SAMPLE, random_state=0)
    counts = values.str.lower().str.findall(TOKEN).explode().dropna().value_counts()
    return counts.astype("int64")


def parse_times(values: pd.Series) -> pd.Series:
    """Datetimes (UTC) from a datetime or ISO 8601 string column; unparsable → NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values if getattr(values.dt, "tz", None) is None else values.dt.tz_convert(None)
    parsed = pd.to_datetime(values.astype(str).str.strip(), format="ISO8601", utc=True,
                            errors="coerce")
    return parsed.dt.tz_convert(None)


def kind_of(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    values = series.dropna()
    if len(values) == 0:
        return "categorical"
    if len(values) > 10_000:  # the text heuristics need a sample, not a million strings
        values = values.sample(10_000, random_state=0)
    values = values.astype(str)
    iso_shaped = values.str.strip().str.match(_ISO_PATTERN).mean()
    if iso_shaped >= 0.95 and parse_times(values).notna().mean() >= 0.95:
        return "datetime"
    distinct = values.nunique() / len(values)
    long_text = values.str.len().mean() > 30 or values.str.contains(" ").mean() > 0.5
    return "text" if long_text and distinct > 0.5 else "categorical"


def role_of(name: str, series: pd.Series, kind: str, explicit: dict[str, str]) -> str:
    if name in explicit:
        return explicit[name]
    if kind == "datetime":
        return "timestamp"
    if kind in ("categorical", "numeric") and not pd.api.types.is_float_dtype(series):
        values = series.dropna()
        if len(values) >= 20 and values.nunique() / len(values) >= 0.95:
            return "id"
    return "feature"


def as_numbers(series: pd.Series, kind: str) -> Any:
    """Finite values of a numeric, datetime (epoch seconds) or text (length) column as
    floats; missing and infinite values are left out (``missing_mask`` counts them)."""
    values = series.dropna()
    if kind == "datetime":
        times = parse_times(values).dropna().astype("datetime64[ns]")
        return times.astype("int64").to_numpy(dtype=float) / 1e9
    if kind == "text":
        return values.astype(str).str.len().to_numpy(dtype=float)
    numbers = values.to_numpy(dtype=float)
    return numbers[np.isfinite(numbers)]


def infinite_count(series: pd.Series, kind: str) -> int:
    """How many values are +inf or -inf (numeric columns; 0 for other kinds)."""
    if kind != "numeric":
        return 0
    numbers = series.dropna().to_numpy(dtype=float)
    return int(np.isinf(numbers).sum())
